//! Which channels hear about a finding: the policy's `[notify]` lists name the severities each
//! channel receives, so a low finding can go to the webhook without paging anyone.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::model::Notification;
use crate::outcome::Severity;

/// An alert channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Teams,
    Email,
    Webhook,
}

impl Channel {
    /// The channel's name in Actions (`target`) and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Teams => "teams",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The channels whose routing list contains `severity`, in a fixed order.
pub fn route(
    severity: Severity,
    teams: &[Severity],
    email: &[Severity],
    webhook: &[Severity],
) -> Vec<Channel> {
    [
        (Channel::Teams, teams),
        (Channel::Email, email),
        (Channel::Webhook, webhook),
    ]
    .into_iter()
    .filter(|(_, list)| list.contains(&severity))
    .map(|(channel, _)| channel)
    .collect()
}

/// Groups notifications by the channels they are routed to, so each channel gets one batched
/// message. Channels with nothing to say are left out.
pub fn by_channel(
    notifications: &[Notification],
    teams: &[Severity],
    email: &[Severity],
    webhook: &[Severity],
) -> Vec<(Channel, Vec<Notification>)> {
    let mut groups: Vec<(Channel, Vec<Notification>)> = Vec::new();
    for notification in notifications {
        for channel in route(notification.severity, teams, email, webhook) {
            match groups.iter_mut().find(|(c, _)| *c == channel) {
                Some((_, list)) => list.push(notification.clone()),
                None => groups.push((channel, vec![notification.clone()])),
            }
        }
    }
    groups.sort_by_key(|(channel, _)| *channel);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::model::Change;
    use crate::notify::model::tests::{VAULT, finding};
    use Severity::*;

    const TEAMS: &[Severity] = &[Critical, High, Medium];
    const EMAIL: &[Severity] = &[Critical, High];
    const WEBHOOK: &[Severity] = &[Critical, High, Medium, Low];

    #[test]
    fn routes_by_the_policy_lists() {
        assert_eq!(
            route(Critical, TEAMS, EMAIL, WEBHOOK),
            vec![Channel::Teams, Channel::Email, Channel::Webhook]
        );
        assert_eq!(
            route(Medium, TEAMS, EMAIL, WEBHOOK),
            vec![Channel::Teams, Channel::Webhook]
        );
        assert_eq!(route(Low, TEAMS, EMAIL, &[]), Vec::<Channel>::new());
    }

    #[test]
    fn groups_notifications_per_channel() {
        let high = Notification::from_finding(&finding(High, VAULT), Change::New, None);
        let medium = Notification::from_finding(&finding(Medium, VAULT), Change::New, None);
        let all = [high, medium];
        let groups = by_channel(&all, TEAMS, EMAIL, &[]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, Channel::Teams);
        assert_eq!(groups[0].1.len(), 2);
        assert_eq!(groups[1].0, Channel::Email);
        assert_eq!(groups[1].1[0].severity, High);
    }
}
