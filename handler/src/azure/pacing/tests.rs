use super::*;

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-0000000000AA/resourceGroups/rg";

fn read() -> BucketKey {
    BucketKey::of("GET", SUB)
}

#[test]
fn buckets_come_from_the_request() {
    assert_eq!(
        read().scope,
        Scope::Subscription("00000000-0000-0000-0000-0000000000aa".to_owned())
    );
    assert_eq!(BucketKey::of("POST", SUB).operation, Operation::Write);
    assert_eq!(BucketKey::of("PATCH", SUB).operation, Operation::Write);
    assert_eq!(BucketKey::of("DELETE", SUB).operation, Operation::Delete);
    assert_eq!(
        BucketKey::of("GET", "/providers/Microsoft.Management/managementGroups/mg").scope,
        Scope::Tenant
    );
    assert_eq!(
        BucketKey::of("POST", "/providers/Microsoft.ResourceGraph/resources").scope,
        Scope::Graph
    );
}

/// A pacer that has heard `remaining` reads are left in the subscription.
async fn told(remaining: &'static str) -> Pacer {
    let pacer = Pacer::default();
    let ticket = pacer.admit(read(), None).await.unwrap();
    pacer.observe(&ticket, false, None, |name| {
        (name == "x-ms-ratelimit-remaining-subscription-reads").then_some(remaining)
    });
    pacer
}

/// When `admit` lets a request of `key` go, measured from `start`.
async fn sent_after(pacer: &Pacer, key: &BucketKey, start: Instant) -> Duration {
    pacer.admit(key.clone(), None).await.unwrap();
    Instant::now() - start
}

#[tokio::test(start_paused = true)]
async fn until_the_first_answer_only_a_probe_goes_at_once_then_the_documented_rate() {
    let pacer = Pacer::default();
    let start = Instant::now();
    for _ in 0..PROBE as usize {
        assert_eq!(sent_after(&pacer, &read(), start).await, Duration::ZERO);
    }
    // A bucket that never reports is held to ARM's documented refill, 25 reads/s.
    for n in 1..=50u64 {
        let at = sent_after(&pacer, &read(), start).await;
        assert_eq!(
            at,
            Duration::from_millis(40 * n),
            "request {n} after the probe"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_lets_the_requests_queued_behind_the_probe_go_at_once() {
    let pacer = std::sync::Arc::new(Pacer::default());
    let start = Instant::now();
    let first = pacer.admit(read(), None).await.unwrap();
    // A sweep's 99 other reads ask before any answer: 3 more go, the rest queue.
    let queued: Vec<_> = (0..99)
        .map(|_| {
            let pacer = pacer.clone();
            tokio::spawn(async move {
                pacer.admit(read(), None).await.unwrap();
                Instant::now()
            })
        })
        .collect();
    tokio::task::yield_now().await;
    // 10 ms later the first answer says the bucket is full.
    tokio::time::sleep(Duration::from_millis(10)).await;
    pacer.observe(&first, false, None, |name| {
        (name == "x-ms-ratelimit-remaining-subscription-reads").then_some("249")
    });
    for request in queued {
        let sent = request.await.unwrap();
        assert!(
            sent - start <= Duration::from_millis(10),
            "{:?}",
            sent - start
        );
    }
    // 100 sent, none answered but the first: 249 less the 99 sent since.
    let tokens = pacer.tokens(&read());
    assert!((150.0..=151.0).contains(&tokens), "{tokens}");
}

#[tokio::test(start_paused = true)]
async fn above_the_reserve_requests_go_at_once_then_at_the_refill_rate() {
    let pacer = told("250").await;
    let start = Instant::now();
    // 250 tokens, 50 kept back: 200 go at once.
    for _ in 0..200 {
        assert_eq!(sent_after(&pacer, &read(), start).await, Duration::ZERO);
    }
    // 25 more are spread over the next second, one every 40 ms.
    for n in 1..=25u64 {
        let at = sent_after(&pacer, &read(), start).await;
        assert_eq!(at, Duration::from_millis(40 * n));
    }
}

#[tokio::test(start_paused = true)]
async fn writes_pace_at_ten_a_second_and_separately_from_reads() {
    let pacer = Pacer::default();
    let write = BucketKey::of("PUT", SUB);
    let ticket = pacer.admit(write.clone(), None).await.unwrap();
    pacer.observe(&ticket, false, None, |name| {
        (name == "x-ms-ratelimit-remaining-subscription-writes").then_some("200")
    });
    let start = Instant::now();
    for _ in 0..160 {
        assert_eq!(sent_after(&pacer, &write, start).await, Duration::ZERO);
    }
    assert_eq!(
        sent_after(&pacer, &write, start).await,
        Duration::from_millis(100)
    );
    let start = Instant::now();
    assert_eq!(sent_after(&pacer, &read(), start).await, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_low_reported_count_from_other_instances_slows_this_one() {
    // The same identity spent the bucket elsewhere: 20 left, under the reserve of 50.
    let pacer = told("20").await;
    let tokens = pacer.tokens(&read());
    assert!((19.9..=20.1).contains(&tokens), "{tokens}");
    let start = Instant::now();
    // 31 tokens short of the reserve at 25/s.
    assert_eq!(
        sent_after(&pacer, &read(), start).await,
        Duration::from_millis(1_240)
    );
    // The global count counts too, when lower.
    let global = Pacer::default();
    let ticket = global.admit(read(), None).await.unwrap();
    global.observe(&ticket, false, None, |name| match name {
        "x-ms-ratelimit-remaining-subscription-reads" => Some("200"),
        "x-ms-ratelimit-remaining-subscription-global-reads" => Some("10"),
        _ => None,
    });
    assert!(global.tokens(&read()) < 11.0);
}

#[tokio::test(start_paused = true)]
async fn a_report_older_than_later_requests_is_not_counted_twice() {
    let pacer = told("250").await;
    let first = pacer.admit(read(), None).await.unwrap();
    for _ in 0..9 {
        pacer.admit(read(), None).await.unwrap();
    }
    // The first answer says 249 left; nine more went out since: 240, as estimated.
    pacer.observe(&first, false, None, |name| {
        (name == "x-ms-ratelimit-remaining-subscription-reads").then_some("249")
    });
    assert!((239.9..=240.1).contains(&pacer.tokens(&read())));
}

#[tokio::test(start_paused = true)]
async fn a_429_pauses_its_bucket_only_and_for_at_most_a_minute() {
    let pacer = told("250").await;
    let other = BucketKey::of("GET", "/subscriptions/00000000-0000-0000-0000-0000000000bb");
    let ticket = pacer.admit(read(), None).await.unwrap();
    pacer.observe(&ticket, true, Some(Duration::from_secs(7)), |_| None);
    let start = Instant::now();
    assert_eq!(sent_after(&pacer, &other, start).await, Duration::ZERO);
    assert_eq!(
        sent_after(&pacer, &BucketKey::of("PUT", SUB), start).await,
        Duration::ZERO,
        "writes have their own bucket"
    );
    // A request whose deadline comes first gives up at once and takes nothing.
    let before = pacer.tokens(&read());
    let wait = pacer
        .admit(read(), Some(start + Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(wait >= Duration::from_secs(6), "{wait:?}");
    assert_eq!(Instant::now(), start);
    assert!((pacer.tokens(&read()) - before).abs() < 0.01);
    assert!(sent_after(&pacer, &read(), start).await >= Duration::from_secs(7));
    // A hostile Retry-After is bounded.
    pacer.observe(&ticket, true, Some(Duration::from_secs(86_400)), |_| None);
    let start = Instant::now();
    assert!(sent_after(&pacer, &read(), start).await <= MAX_SHARED_PAUSE);
}

#[tokio::test(start_paused = true)]
async fn requests_and_the_ones_held_back_are_counted() {
    let before = activity();
    let pacer = Pacer::default();
    // The probe goes at once; the next request waits for the documented refill.
    for _ in 0..PROBE as usize + 1 {
        pacer.admit(read(), None).await.unwrap();
    }
    let after = activity();
    // Other tests count too (the counts are the process's): at least ours.
    assert!(after.requests > before.requests + PROBE as u64);
    assert!(after.waits > before.waits);
}

#[tokio::test(start_paused = true)]
async fn a_pause_that_starts_while_waiting_holds_the_waiter() {
    let pacer = std::sync::Arc::new(told("250").await);
    for _ in 0..200 {
        pacer.admit(read(), None).await.unwrap();
    }
    let ticket = pacer.admit(read(), None).await.unwrap();
    let waiting = {
        let pacer = pacer.clone();
        tokio::spawn(async move { pacer.admit(read(), None).await.map(|t| t.sent) })
    };
    tokio::task::yield_now().await;
    let start = Instant::now();
    pacer.observe(&ticket, true, Some(Duration::from_secs(3)), |_| None);
    let sent = waiting.await.unwrap().unwrap();
    assert!(sent - start >= Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn resource_graph_waits_for_its_window_when_the_quota_is_spent() {
    let pacer = Pacer::default();
    let graph = BucketKey::of("POST", "/providers/Microsoft.ResourceGraph/resources");
    let ticket = pacer.admit(graph.clone(), None).await.unwrap();
    pacer.observe(&ticket, false, None, |name| match name {
        "x-ms-user-quota-remaining" => Some("0"),
        "x-ms-user-quota-resets-after" => Some("00:00:04"),
        _ => None,
    });
    let start = Instant::now();
    assert!(sent_after(&pacer, &graph, start).await >= Duration::from_secs(4));
    assert_eq!(parse_hms("01:02:03"), Some(Duration::from_secs(3723)));
    assert_eq!(parse_hms("00:61:00"), None);
    assert_eq!(parse_hms("5"), None);
}
