//! Instances and memory: the Flex Consumption defaults in infra/main.bicep stay within what one
//! managed identity's ARM budget can serve (docs/deploy.md, *Instances and memory*).

use super::{MAIN_TEMPLATE, read};

/// ARM's read bucket per principal and subscription (handler/src/azure/pacing.rs).
const ARM_READ_BUCKET: u32 = 250;
/// The share of a bucket cmk-guard's pacing leaves for others (`pacing::RESERVE_SHARE`), in
/// percent.
const RESERVE_PERCENT: u32 = 20;
/// Reads an instance sends at once to a bucket it has heard nothing from (`pacing::PROBE`).
const PROBE_READS: u32 = 4;

/// The default of `param <name> int = <default>` in the main template.
fn int_default(name: &str) -> u32 {
    let head = format!("param {name} int = ");
    let line = read(MAIN_TEMPLATE)
        .lines()
        .find(|line| line.starts_with(&head))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{MAIN_TEMPLATE}: `{head}…` not found"));
    line[head.len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{MAIN_TEMPLATE}: `{line}`: {e}"))
}

#[test]
fn instance_memory_defaults_to_the_smallest_size() {
    assert_eq!(
        int_default("instanceMemoryMB"),
        512,
        "{MAIN_TEMPLATE}: cmk-guard needs well under 512 MB; a larger default only costs more"
    );
}

#[test]
fn instance_cap_fits_one_identitys_arm_budget() {
    let cap = int_default("maximumInstanceCount");
    // Every instance signs in as the same identity and so draws from one bucket: when all of
    // them start at once, their first reads (sent before any of them has heard ARM's count)
    // must fit in the reserve that pacing leaves, or a scale-out alone runs the bucket dry.
    let reserve = ARM_READ_BUCKET * RESERVE_PERCENT / 100;
    assert!(
        (1..=reserve / PROBE_READS).contains(&cap),
        "{MAIN_TEMPLATE}: maximumInstanceCount {cap} × {PROBE_READS} first reads exceeds the \
         {reserve}-read reserve of one identity's ARM budget"
    );
    assert_eq!(
        cap, 10,
        "docs/deploy.md explains the default of 10; change both together"
    );
}
