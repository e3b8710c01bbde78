//! Configuration from environment variables (the Function app's settings). Parsed once at
//! start; an invalid value stops the process with a message naming the variable.

use std::fmt;
use std::str::FromStr;

use url::Url;

use crate::azure::{
    ApiVersions, AzureSettings, ConnectTo, ProxySettings, SubscriptionScope, TransportSettings,
};
use crate::cloud::Cloud;
use crate::ids::{Allowlist, ManagementGroupId, SubscriptionId};
use crate::intake::IntakeSettings;
use crate::notify::NotifySettings;
use crate::policy::Policy;
use crate::snapshot::{AuditHub, WiringTargets};
use crate::state::StateSpec;

/// Every configuration variable cmk-guard reads, in the order of the README table (a test
/// holds them, the table and what [`Settings::from_lookup`] reads together). The infra
/// consistency test (issue 8) checks app settings against this list.
pub const VARIABLES: &[&str] = &[
    "CMKGUARD_MODE",
    "CMKGUARD_POLICY_FILE",
    "CMKGUARD_SUBSCRIPTIONS",
    "CMKGUARD_MANAGEMENT_GROUPS",
    "CMKGUARD_CLOUD",
    "CMKGUARD_ARM_ENDPOINT",
    "CMKGUARD_KEYVAULT_DNS_SUFFIX",
    "CMKGUARD_CA_BUNDLE",
    "CMKGUARD_CONNECT_TO",
    "CMKGUARD_API_VERSIONS",
    "CMKGUARD_STATE",
    "CMKGUARD_TEAMS_WEBHOOK_URL",
    "CMKGUARD_WEBHOOK_URL",
    "CMKGUARD_WEBHOOK_SECRET",
    "CMKGUARD_EMAIL_TO",
    "CMKGUARD_EMAIL_FROM",
    "CMKGUARD_ACS_ENDPOINT",
    "CMKGUARD_SMTP_URL",
    "CMKGUARD_KEYVAULT_EVENTS_TARGET",
    "CMKGUARD_AUDIT_EVENTHUB_RULE_ID",
    "CMKGUARD_AUDIT_EVENTHUB_NAME",
    "CMKGUARD_READ_RATE",
    "CMKGUARD_SWEEP_BUDGET_SECONDS",
    "CMKGUARD_SWEEP_SCHEDULE",
    "CMKGUARD_SWEEP_QUEUE",
    "CMKGUARD_LOG",
    "CMKGUARD_LOGS_INGESTION_ENDPOINT",
    "CMKGUARD_LOGS_DCR_ID",
    "CMKGUARD_LOGS_STREAM",
];

/// The Functions host sets this to the port it will call (azure-notes §H1).
pub const PORT_VARIABLE: &str = "FUNCTIONS_CUSTOMHANDLER_PORT";

pub use crate::config::ConfigError;

/// How far cmk-guard may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Record findings only.
    Observe,
    /// Record and alert.
    #[default]
    Alert,
    /// Alert and apply the remediations the policy allows.
    Remediate,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "observe" => Ok(Mode::Observe),
            "alert" => Ok(Mode::Alert),
            "remediate" => Ok(Mode::Remediate),
            other => Err(format!(
                "`{other}` is not a mode; use observe, alert or remediate"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Observe => "observe",
            Mode::Alert => "alert",
            Mode::Remediate => "remediate",
        })
    }
}

/// The runtime configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    pub intake: IntakeSettings,
    /// `CMKGUARD_CLOUD`: the Azure cloud, which gives every endpoint a default.
    pub cloud: Cloud,
    pub arm_endpoint: Url,
    pub transport: TransportSettings,
    pub api_versions: ApiVersions,
    /// `CMKGUARD_POLICY_FILE`, or the built-in policy.
    pub policy: Policy,
    /// `CMKGUARD_READ_RATE`: an optional cap on this instance's Azure requests per second,
    /// shared by every worker (unset: paced from ARM's remaining counts only).
    pub read_rate: Option<u32>,
    /// `CMKGUARD_STATE`: `sqlite:<path>` or a Blob container URL.
    pub state: StateSpec,
    /// The alert channels (`CMKGUARD_TEAMS_WEBHOOK_URL`, `CMKGUARD_EMAIL_TO`, …).
    pub notify: NotifySettings,
    /// `CMKGUARD_SWEEP_BUDGET_SECONDS`: how long one sweep invocation may work before it saves
    /// its cursor and stops, well inside the host's `functionTimeout` (10 minutes).
    pub sweep_budget: std::time::Duration,
    /// Self-wiring (`vault.events-wired`): where CMK vaults' events and audit logs must go.
    pub wiring: WiringTargets,
    /// `CMKGUARD_SWEEP_QUEUE` on the host's storage: the sweep fans out per subscription;
    /// `None`: the Sweep function does the whole sweep itself.
    pub sweep_queue: Option<crate::queue::QueueSettings>,
    /// `CMKGUARD_LOGS_INGESTION_ENDPOINT`, `CMKGUARD_LOGS_DCR_ID`, `CMKGUARD_LOGS_STREAM`:
    /// where finding changes go in Azure Monitor; `None`: nowhere.
    pub findings_log: Option<crate::monitor::LogsSettings>,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let value = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mode = match value("CMKGUARD_MODE") {
            Some(text) => text
                .parse()
                .map_err(|e| ConfigError::new("CMKGUARD_MODE", e))?,
            None => Mode::default(),
        };
        let subscriptions = value("CMKGUARD_SUBSCRIPTIONS")
            .map(|text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        SubscriptionId::parse(s)
                            .map_err(|e| ConfigError::new("CMKGUARD_SUBSCRIPTIONS", e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let management_groups = value("CMKGUARD_MANAGEMENT_GROUPS")
            .map(|text| {
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        ManagementGroupId::parse(s).map_err(|e| {
                            ConfigError::new("CMKGUARD_MANAGEMENT_GROUPS", e.to_string())
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let cloud = match value("CMKGUARD_CLOUD") {
            Some(text) => text
                .parse::<Cloud>()
                .map_err(|e| ConfigError::new("CMKGUARD_CLOUD", e.to_string()))?,
            None => Cloud::default(),
        };
        let keyvault_dns_suffix = value("CMKGUARD_KEYVAULT_DNS_SUFFIX")
            .unwrap_or_else(|| cloud.keyvault_dns_suffix().into());
        let suffix = keyvault_dns_suffix
            .trim_start_matches('.')
            .to_ascii_lowercase();
        if suffix.split('.').count() < 2
            || !suffix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ConfigError::new(
                "CMKGUARD_KEYVAULT_DNS_SUFFIX",
                format!("`{keyvault_dns_suffix}` is not a DNS suffix such as vault.azure.net"),
            ));
        }
        let arm_text =
            value("CMKGUARD_ARM_ENDPOINT").unwrap_or_else(|| cloud.arm_endpoint().into());
        let arm_endpoint = Url::parse(&arm_text).map_err(|e| {
            ConfigError::new(
                "CMKGUARD_ARM_ENDPOINT",
                format!("`{arm_text}` is not a URL: {e}"),
            )
        })?;
        if arm_endpoint.scheme() != "https" || arm_endpoint.host_str().is_none() {
            return Err(ConfigError::new(
                "CMKGUARD_ARM_ENDPOINT",
                format!("`{arm_text}` must be an https URL"),
            ));
        }
        let ca_bundle = value("CMKGUARD_CA_BUNDLE").map(std::path::PathBuf::from);
        if let Some(path) = &ca_bundle
            && !path.is_file()
        {
            return Err(ConfigError::new(
                "CMKGUARD_CA_BUNDLE",
                format!("{} is not a readable file", path.display()),
            ));
        }
        let connect_to = value("CMKGUARD_CONNECT_TO")
            .map(|text| {
                ConnectTo::parse_list(&text)
                    .map_err(|e| ConfigError::new("CMKGUARD_CONNECT_TO", e.to_string()))
            })
            .transpose()?
            .unwrap_or_default();
        let api_versions = ApiVersions::with_overrides(value("CMKGUARD_API_VERSIONS").as_deref())
            .map_err(|e| ConfigError::new("CMKGUARD_API_VERSIONS", e.to_string()))?;
        let read_rate = match value("CMKGUARD_READ_RATE") {
            Some(text) => match text.parse::<u32>() {
                Ok(rate) if (1..=10_000).contains(&rate) => Some(rate),
                _ => {
                    return Err(ConfigError::new(
                        "CMKGUARD_READ_RATE",
                        format!("`{text}` is not a rate of 1 to 10000 requests per second"),
                    ));
                }
            },
            None => None,
        };
        let sweep_budget = match value("CMKGUARD_SWEEP_BUDGET_SECONDS") {
            Some(text) => match text.parse::<u64>() {
                Ok(seconds) if (1..=3600).contains(&seconds) => {
                    std::time::Duration::from_secs(seconds)
                }
                _ => {
                    return Err(ConfigError::new(
                        "CMKGUARD_SWEEP_BUDGET_SECONDS",
                        format!("`{text}` is not a number of seconds from 1 to 3600"),
                    ));
                }
            },
            None => std::time::Duration::from_secs(8 * 60),
        };
        let state = StateSpec::parse(value("CMKGUARD_STATE").as_deref().unwrap_or_default())
            .map_err(|e| {
                let message = e
                    .message
                    .strip_prefix("CMKGUARD_STATE: ")
                    .unwrap_or(&e.message);
                ConfigError::new("CMKGUARD_STATE", message)
            })?;
        let proxy = ProxySettings::from_lookup(value)?;
        let mut notify = NotifySettings::from_lookup(value)?;
        notify.cloud = cloud;
        let wiring = wiring_targets(value)?;
        let sweep_queue = crate::queue::QueueSettings::from_lookup(value)?;
        let findings_log = crate::monitor::LogsSettings::from_lookup(value)?;
        let policy = match value("CMKGUARD_POLICY_FILE") {
            Some(path) => Policy::load(std::path::Path::new(&path))
                .map_err(|e| ConfigError::new("CMKGUARD_POLICY_FILE", e.to_string()))?,
            None => Policy::default(),
        };
        Ok(Self {
            mode,
            intake: IntakeSettings {
                subscriptions: Allowlist::new(subscriptions, management_groups),
                keyvault_dns_suffix: suffix,
                managed_groups: crate::ids::ManagedGroups::default(),
            },
            cloud,
            arm_endpoint,
            transport: TransportSettings {
                ca_bundle,
                connect_to,
                proxy,
            },
            api_versions,
            policy,
            read_rate,
            state,
            notify,
            sweep_budget,
            wiring,
            sweep_queue,
            findings_log,
        })
    }

    /// The part the Azure clients need.
    pub fn azure(&self) -> AzureSettings {
        AzureSettings {
            cloud: self.cloud,
            arm_endpoint: self.arm_endpoint.clone(),
            transport: self.transport.clone(),
            api_versions: self.api_versions.clone(),
            read_rate: self.read_rate,
            // The same cell as intake's: what discovery adds, the guard allows at once.
            subscriptions: SubscriptionScope::shared(self.intake.subscriptions.clone()),
            keyvault_dns_suffix: self.intake.keyvault_dns_suffix.clone(),
        }
    }
}

/// The self-wiring targets. The audit hub needs both of its variables: one without the other
/// is a configuration error, as is an id that is not an ARM id of the right type.
fn wiring_targets(value: impl Fn(&str) -> Option<String>) -> Result<WiringTargets, ConfigError> {
    const TARGET: &str = "CMKGUARD_KEYVAULT_EVENTS_TARGET";
    const RULE: &str = "CMKGUARD_AUDIT_EVENTHUB_RULE_ID";
    const HUB: &str = "CMKGUARD_AUDIT_EVENTHUB_NAME";
    let arm_id = |name: &'static str, text: &str| {
        crate::ids::ArmResourceId::parse(text)
            .map_err(|e| ConfigError::new(name, format!("`{text}` is not an ARM resource id: {e}")))
    };
    let events_target = value(TARGET)
        .map(|text| arm_id(TARGET, &text))
        .transpose()?;
    let audit = match (value(RULE), value(HUB)) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                HUB,
                format!("not set, but {RULE} is: set both, or neither"),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                RULE,
                format!("not set, but {HUB} is: set both, or neither"),
            ));
        }
        (Some(rule), Some(hub)) => {
            let rule_id = arm_id(RULE, &rule)?;
            if !rule_id.is_type("Microsoft.EventHub/namespaces/authorizationRules") {
                return Err(ConfigError::new(
                    RULE,
                    format!(
                        "`{rule}` is not a Microsoft.EventHub/namespaces/authorizationRules id"
                    ),
                ));
            }
            let valid_hub = hub.len() <= 256
                && hub
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid_hub {
                return Err(ConfigError::new(
                    HUB,
                    format!(
                        "`{}` is not an Event Hub name (letters, digits, `-`, `_`, `.`)",
                        crate::ids::truncate(&hub)
                    ),
                ));
            }
            Some(AuditHub { rule_id, hub })
        }
    };
    Ok(WiringTargets {
        events_target,
        audit,
    })
}

/// The port the host will call, from `FUNCTIONS_CUSTOMHANDLER_PORT`.
pub fn listen_port(lookup: impl Fn(&str) -> Option<String>) -> Result<u16, ConfigError> {
    let text = lookup(PORT_VARIABLE).ok_or_else(|| {
        ConfigError::new(
            PORT_VARIABLE,
            "not set; the Azure Functions host sets it when it starts the handler (use `--port` to run by hand)",
        )
    })?;
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(ConfigError::new(
            PORT_VARIABLE,
            format!("`{text}` is not a TCP port (1-65535)"),
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A settings lookup over `pairs` instead of the environment (shared by the tests of the
    /// modules that read their own settings).
    pub(crate) fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn self_wiring_variables_are_parsed_and_checked() {
        const FUNCTION: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Web/sites/app/functions/OnKeyVaultEvent";
        const RULE: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.EventHub/namespaces/ns/authorizationRules/send";
        let none = Settings::from_lookup(lookup(&[])).unwrap();
        assert!(!none.wiring.is_configured());
        let both = Settings::from_lookup(lookup(&[
            ("CMKGUARD_KEYVAULT_EVENTS_TARGET", FUNCTION),
            ("CMKGUARD_AUDIT_EVENTHUB_RULE_ID", RULE),
            ("CMKGUARD_AUDIT_EVENTHUB_NAME", "keyvault-audit"),
        ]))
        .unwrap();
        assert_eq!(
            both.wiring.events_target.as_ref().map(|t| t.as_str()),
            Some(FUNCTION)
        );
        let audit = both.wiring.audit.unwrap();
        assert_eq!(
            (audit.rule_id.as_str(), audit.hub.as_str()),
            (RULE, "keyvault-audit")
        );
        let error = |pairs: &[(&str, &str)]| {
            Settings::from_lookup(lookup(pairs))
                .unwrap_err()
                .to_string()
        };
        for (pairs, variable) in [
            (
                &[("CMKGUARD_KEYVAULT_EVENTS_TARGET", "OnKeyVaultEvent")][..],
                "CMKGUARD_KEYVAULT_EVENTS_TARGET",
            ),
            (
                &[("CMKGUARD_AUDIT_EVENTHUB_RULE_ID", RULE)][..],
                "CMKGUARD_AUDIT_EVENTHUB_NAME",
            ),
            (
                &[("CMKGUARD_AUDIT_EVENTHUB_NAME", "hub")][..],
                "CMKGUARD_AUDIT_EVENTHUB_RULE_ID",
            ),
            (
                &[
                    ("CMKGUARD_AUDIT_EVENTHUB_RULE_ID", FUNCTION),
                    ("CMKGUARD_AUDIT_EVENTHUB_NAME", "hub"),
                ][..],
                "CMKGUARD_AUDIT_EVENTHUB_RULE_ID",
            ),
            (
                &[
                    ("CMKGUARD_AUDIT_EVENTHUB_RULE_ID", RULE),
                    ("CMKGUARD_AUDIT_EVENTHUB_NAME", "a hub?"),
                ][..],
                "CMKGUARD_AUDIT_EVENTHUB_NAME",
            ),
        ] {
            let message = error(pairs);
            assert!(message.contains(variable), "{message}");
        }
    }

    #[test]
    fn defaults() {
        let settings = Settings::from_lookup(lookup(&[])).unwrap();
        assert_eq!(settings.mode, Mode::Alert);
        assert!(!settings.intake.subscriptions.is_limited());
        assert_eq!(settings.intake.keyvault_dns_suffix, "vault.azure.net");
        assert_eq!(
            settings.arm_endpoint.as_str(),
            "https://management.azure.com/"
        );
    }

    /// `CMKGUARD_CLOUD` moves every endpoint to that cloud; the explicit settings still win.
    #[test]
    fn the_cloud_gives_every_endpoint_its_default() {
        let china =
            Settings::from_lookup(lookup(&[("CMKGUARD_CLOUD", "AzureChinaCloud")])).unwrap();
        assert_eq!(china.cloud, Cloud::China);
        assert_eq!(
            china.arm_endpoint.as_str(),
            "https://management.chinacloudapi.cn/"
        );
        assert_eq!(china.intake.keyvault_dns_suffix, "vault.azure.cn");
        assert_eq!(china.notify.cloud, Cloud::China);
        assert_eq!(china.azure().cloud, Cloud::China);
        let overridden = Settings::from_lookup(lookup(&[
            ("CMKGUARD_CLOUD", "usgovernment"),
            ("CMKGUARD_ARM_ENDPOINT", "https://arm.contoso.example"),
            ("CMKGUARD_KEYVAULT_DNS_SUFFIX", "vault.contoso.example"),
        ]))
        .unwrap();
        assert_eq!(overridden.cloud, Cloud::UsGovernment);
        assert_eq!(
            overridden.arm_endpoint.as_str(),
            "https://arm.contoso.example/"
        );
        assert_eq!(
            overridden.intake.keyvault_dns_suffix,
            "vault.contoso.example"
        );
    }

    /// The proxy variables: upper case wins, `host:port` alone is http, and no message or
    /// `Debug` output shows the proxy's password.
    #[test]
    fn the_proxy_variables_are_read_and_kept_secret() {
        let settings = Settings::from_lookup(lookup(&[
            ("HTTPS_PROXY", "http://user:S3cr3t@proxy.example:3128"),
            ("https_proxy", "http://other.example:1"),
            ("http_proxy", "proxy.example:8080"),
            ("no_proxy", ".internal.example,10.0.0.0/8"),
        ]))
        .unwrap();
        let proxy = &settings.transport.proxy;
        assert_eq!(
            proxy.https.as_ref().unwrap().host_str(),
            Some("proxy.example")
        );
        assert_eq!(
            proxy.http.as_ref().map(url::Url::as_str),
            Some("http://proxy.example:8080/")
        );
        assert_eq!(
            proxy.no_proxy.as_deref(),
            Some(".internal.example,10.0.0.0/8")
        );
        assert_eq!(proxy.proxies().unwrap().len(), 2);
        assert!(!format!("{settings:?}").contains("S3cr3t"));
        let error = Settings::from_lookup(lookup(&[("HTTPS_PROXY", "ftp://u:S3cr3t@p.example")]))
            .unwrap_err();
        assert_eq!(error.variable, "HTTPS_PROXY");
        assert!(!error.to_string().contains("S3cr3t"), "{error}");
        let none = Settings::from_lookup(lookup(&[])).unwrap();
        assert!(none.transport.proxy.proxies().unwrap().is_empty());
    }

    #[test]
    fn reads_values() {
        let settings = Settings::from_lookup(lookup(&[
            ("CMKGUARD_MODE", "Remediate"),
            (
                "CMKGUARD_SUBSCRIPTIONS",
                " 3F7B2C1D-8E4A-4B6F-9C2D-5A1E0F9B7C34 , ",
            ),
            ("CMKGUARD_KEYVAULT_DNS_SUFFIX", ".vault.azure.cn"),
            ("CMKGUARD_MANAGEMENT_GROUPS", "mg-platform, Contoso_(EU).1,"),
        ]))
        .unwrap();
        assert_eq!(settings.mode, Mode::Remediate);
        assert_eq!(
            settings.intake.subscriptions.snapshot().unwrap()[0].as_str(),
            "3f7b2c1d-8e4a-4b6f-9c2d-5a1e0f9b7c34"
        );
        let groups: Vec<&str> = settings
            .intake
            .subscriptions
            .groups()
            .iter()
            .map(ManagementGroupId::as_str)
            .collect();
        assert_eq!(groups, ["mg-platform", "Contoso_(EU).1"]);
        assert!(
            settings
                .azure()
                .subscriptions
                .allowlist()
                .awaits_discovery()
        );
        assert_eq!(settings.intake.keyvault_dns_suffix, "vault.azure.cn");
    }

    #[test]
    fn errors_name_the_variable() {
        for (name, value) in [
            ("CMKGUARD_MODE", "fix-everything"),
            ("CMKGUARD_SUBSCRIPTIONS", "not-a-guid"),
            ("CMKGUARD_MANAGEMENT_GROUPS", "mg/../other"),
            ("CMKGUARD_ARM_ENDPOINT", "http://management.azure.com"),
            ("CMKGUARD_KEYVAULT_DNS_SUFFIX", "vault/azure"),
            ("CMKGUARD_CA_BUNDLE", "/nonexistent/ca.pem"),
            ("CMKGUARD_CONNECT_TO", "management.azure.com"),
            ("CMKGUARD_API_VERSIONS", "Microsoft.KeyVault=yesterday"),
            ("CMKGUARD_POLICY_FILE", "/nonexistent/policy.toml"),
            ("CMKGUARD_READ_RATE", "0"),
            ("CMKGUARD_CLOUD", "AzureGermanCloud"),
            ("HTTPS_PROXY", "socks5://proxy.example:1080"),
            ("https_proxy", "http://proxy.example:3128/path"),
            ("HTTP_PROXY", "http://"),
        ] {
            let err = Settings::from_lookup(lookup(&[(name, value)])).unwrap_err();
            assert_eq!(err.variable, name);
        }
    }

    /// The `CMKGUARD_*` and `FUNCTIONS_*` names in the first column of the variables table
    /// that follows `heading` in `doc`, each with the row's last cell (README: "used").
    fn documented(doc: &str, heading: &str) -> Vec<(String, String)> {
        let section = &doc[doc.find(heading).expect(heading)..];
        section
            .lines()
            .skip_while(|line| !line.starts_with("| variable"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .flat_map(|row| {
                let cells: Vec<&str> = row.split(" | ").collect();
                let last = cells.last().unwrap_or(&"").trim_end_matches('|').trim();
                cells[0]
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .filter(|name| name.starts_with("CMKGUARD_") || *name == PORT_VARIABLE)
                    .map(|name| (name.to_owned(), last.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn read_doc(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The documented table and the parsing agree: every variable the README says cmk-guard
    /// uses is asked for by [`Settings::from_lookup`] or [`listen_port`], nothing else is, and
    /// [`VARIABLES`] lists the README's rows in order (the architecture doc's table too).
    #[test]
    fn the_variables_tables_and_the_parsing_agree() {
        // Read before the settings, by the log filter (telemetry).
        const READ_ELSEWHERE: &[&str] = &["CMKGUARD_LOG"];
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let recording = |name: &str| {
            asked.borrow_mut().insert(name.to_owned());
            None
        };
        Settings::from_lookup(recording).unwrap();
        let _ = listen_port(recording);
        // Platform names read along the way (`WEBSITE_SITE_NAME`) are not cmk-guard's to list.
        asked
            .borrow_mut()
            .retain(|name| name.starts_with("CMKGUARD_") || name == PORT_VARIABLE);

        let readme = documented(&read_doc("../README.md"), "## Configuration");
        let used: std::collections::BTreeSet<String> = readme
            .iter()
            .filter(|(name, used)| used == "yes" && !READ_ELSEWHERE.contains(&name.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(
            asked.into_inner(),
            used,
            "read by the parsing vs. the README table"
        );

        let in_order: Vec<&str> = readme
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| *name != PORT_VARIABLE)
            .collect();
        assert_eq!(
            in_order, VARIABLES,
            "settings::VARIABLES vs. the README table"
        );

        let mut architecture: Vec<String> =
            documented(&read_doc("../docs/architecture.md"), "### Configuration")
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| name != PORT_VARIABLE)
                .collect();
        architecture.sort();
        let mut variables = VARIABLES.to_vec();
        variables.sort_unstable();
        assert_eq!(architecture, variables, "docs/architecture.md's table");
    }

    #[test]
    fn the_port_must_be_set_and_valid() {
        assert_eq!(
            listen_port(lookup(&[(PORT_VARIABLE, "7071")])).unwrap(),
            7071
        );
        for bad in ["", "0", "70000", "http"] {
            assert!(
                listen_port(lookup(&[(PORT_VARIABLE, bad)])).is_err(),
                "{bad}"
            );
        }
        assert!(
            listen_port(lookup(&[]))
                .unwrap_err()
                .to_string()
                .contains("not set")
        );
    }
}
