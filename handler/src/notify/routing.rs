//! Which channels hear about a finding: the policy's `[notify]` lists name the severities each
//! channel receives, so a low finding can go to the webhook without paging anyone.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::outcome::Severity;

/// An alert channel. Its name ([`Channel::as_str`]) is also its serialised form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Teams,
    Email,
    Webhook,
}

impl Channel {
    /// Every channel, in the order alerts go out.
    pub const ALL: [Channel; 3] = [Channel::Teams, Channel::Email, Channel::Webhook];

    /// The channel's name in Actions (`target`), the outbox, logs and stored messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Teams => "teams",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    /// Whether the sweep's digest goes here: the generic webhook receives Outcomes, not
    /// digests.
    pub fn takes_digest(&self) -> bool {
        *self != Channel::Webhook
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Channel {
    type Err = UnknownChannel;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|channel| channel.as_str() == text)
            .ok_or_else(|| UnknownChannel(text.to_owned()))
    }
}

/// A channel name that is none of [`Channel::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a channel (teams, email or webhook)")]
pub struct UnknownChannel(String);

impl Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which severities each channel receives: the policy's `[notify]` lists keyed by channel, so
/// routing, batching and the digest ask one table instead of naming every channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(BTreeMap<Channel, Vec<Severity>>);

impl Routes {
    /// The routes from `(channel, severities)` pairs; a channel listed twice keeps the last.
    pub fn new<'a>(routes: impl IntoIterator<Item = (Channel, &'a [Severity])>) -> Self {
        Self(
            routes
                .into_iter()
                .map(|(channel, severities)| (channel, severities.to_vec()))
                .collect(),
        )
    }

    /// The channels whose list contains `severity`, in channel order.
    pub fn channels_for(&self, severity: Severity) -> Vec<Channel> {
        self.0
            .iter()
            .filter(|(_, severities)| severities.contains(&severity))
            .map(|(channel, _)| *channel)
            .collect()
    }

    /// The channels that receive anything at all, in channel order.
    pub fn routed(&self) -> impl Iterator<Item = Channel> + '_ {
        self.0
            .iter()
            .filter(|(_, severities)| !severities.is_empty())
            .map(|(channel, _)| *channel)
    }

    /// Groups items by the channels their severity is routed to, so each channel gets one
    /// batched message; borrowed, in the items' order. Channels with nothing to say are left out.
    pub fn by_channel<'a, T>(
        &self,
        items: &'a [T],
        severity: impl Fn(&T) -> Severity,
    ) -> Vec<(Channel, Vec<&'a T>)> {
        let mut groups: BTreeMap<Channel, Vec<&'a T>> = BTreeMap::new();
        for item in items {
            for channel in self.channels_for(severity(item)) {
                groups.entry(channel).or_default().push(item);
            }
        }
        groups.into_iter().collect()
    }
}

/// The policy's `[notify]` lists. The one place that names the policy's fields per channel.
impl From<&crate::policy::Notify> for Routes {
    fn from(policy: &crate::policy::Notify) -> Self {
        Self::new([
            (Channel::Teams, policy.teams.as_slice()),
            (Channel::Email, policy.email.as_slice()),
            (Channel::Webhook, policy.webhook.as_slice()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Notification;
    use crate::notify::model::Change;
    use crate::notify::model::tests::{VAULT, finding};
    use Severity::*;

    fn routes() -> Routes {
        Routes::new([
            (Channel::Teams, [Critical, High, Medium].as_slice()),
            (Channel::Email, [Critical, High].as_slice()),
            (Channel::Webhook, [Critical, High, Medium, Low].as_slice()),
        ])
    }

    #[test]
    fn routes_by_the_policy_lists() {
        let routes = routes();
        assert_eq!(
            routes.channels_for(Critical),
            vec![Channel::Teams, Channel::Email, Channel::Webhook]
        );
        assert_eq!(
            routes.channels_for(Medium),
            vec![Channel::Teams, Channel::Webhook]
        );
        let quiet = Routes::new([(Channel::Teams, [High].as_slice()), (Channel::Webhook, &[])]);
        assert_eq!(quiet.channels_for(Low), Vec::<Channel>::new());
        assert_eq!(quiet.routed().collect::<Vec<_>>(), vec![Channel::Teams]);
    }

    #[test]
    fn groups_notifications_per_channel() {
        let high = Notification::from_finding(&finding(High, VAULT), Change::New, None);
        let medium = Notification::from_finding(&finding(Medium, VAULT), Change::New, None);
        let all = [high, medium];
        let routes = Routes::new([
            (Channel::Webhook, [].as_slice()),
            (Channel::Email, [Critical, High].as_slice()),
            (Channel::Teams, [Critical, High, Medium].as_slice()),
        ]);
        let groups = routes.by_channel(&all, |n| n.severity);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, Channel::Teams);
        assert_eq!(groups[0].1.len(), 2);
        assert_eq!(groups[1].0, Channel::Email);
        assert_eq!(groups[1].1[0].severity, High);
    }

    #[test]
    fn names_round_trip_through_serde() {
        for channel in Channel::ALL {
            let json = serde_json::to_string(&channel).unwrap();
            assert_eq!(json, format!("\"{channel}\""));
            assert_eq!(serde_json::from_str::<Channel>(&json).unwrap(), channel);
        }
        assert!(serde_json::from_str::<Channel>("\"pager\"").is_err());
    }

    #[test]
    fn the_policy_defaults_route_every_channel() {
        let routes = Routes::from(&crate::policy::Notify::default());
        assert!(!routes.channels_for(Critical).is_empty());
    }
}
