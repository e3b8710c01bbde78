//! Which Azure cloud cmk-guard runs in (`CMKGUARD_CLOUD`), and every host name that follows
//! from it: Resource Manager, Entra ID, Key Vault, the portal, Azure Monitor and
//! Communication Services. The explicit endpoint settings (`CMKGUARD_ARM_ENDPOINT`,
//! `CMKGUARD_KEYVAULT_DNS_SUFFIX`, `CMKGUARD_ACS_ENDPOINT`) still override what they name.

use std::fmt;
use std::str::FromStr;

use azure_core::cloud::CloudConfiguration;

/// The portal origin that links are built with before [`Cloud::portal`] localises them.
pub const PUBLIC_PORTAL: &str = "https://portal.azure.com";

/// An Azure cloud. The Bicep passes `environment().name` (`AzureCloud`,
/// `AzureUSGovernment`, `AzureChinaCloud`), which [`FromStr`] accepts beside the short names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cloud {
    /// Azure (global).
    #[default]
    Public,
    /// Azure Government (US).
    UsGovernment,
    /// Azure operated by 21Vianet (China).
    China,
}

/// `CMKGUARD_CLOUD` names no cloud cmk-guard knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an Azure cloud; use public, usgovernment or china (or the Azure CLI names AzureCloud, AzureUSGovernment, AzureChinaCloud)"
)]
pub struct UnknownCloud(pub String);

impl FromStr for Cloud {
    type Err = UnknownCloud;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "public" | "azurecloud" => Ok(Cloud::Public),
            "usgovernment" | "azureusgovernment" => Ok(Cloud::UsGovernment),
            "china" | "azurechinacloud" => Ok(Cloud::China),
            _ => Err(UnknownCloud(text.trim().chars().take(64).collect())),
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Public => "public",
            Cloud::UsGovernment => "usgovernment",
            Cloud::China => "china",
        })
    }
}

impl Cloud {
    /// Azure Resource Manager; also the audience of ARM tokens (`{endpoint}/.default`).
    pub fn arm_endpoint(self) -> &'static str {
        match self {
            Cloud::Public => "https://management.azure.com",
            Cloud::UsGovernment => "https://management.usgovcloudapi.net",
            Cloud::China => "https://management.chinacloudapi.cn",
        }
    }

    /// The Entra ID authority a service principal signs in at.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::UsGovernment => "https://login.microsoftonline.us",
            Cloud::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The DNS suffix of Key Vault data-plane hosts (`{vault}.{suffix}`).
    pub fn keyvault_dns_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "vault.azure.net",
            Cloud::UsGovernment => "vault.usgovcloudapi.net",
            Cloud::China => "vault.azure.cn",
        }
    }

    /// The token scope of Key Vault's data plane. The Key Vault client takes the scope from
    /// the vault's own 401 challenge and checks it against the vault host; this is what that
    /// challenge names.
    pub fn keyvault_scope(self) -> String {
        format!("https://{}/.default", self.keyvault_dns_suffix())
    }

    /// The Azure portal, for the links in alerts.
    pub fn portal(self) -> &'static str {
        match self {
            Cloud::Public => PUBLIC_PORTAL,
            Cloud::UsGovernment => "https://portal.azure.us",
            Cloud::China => "https://portal.azure.cn",
        }
    }

    /// The DNS suffix of Azure Monitor ingestion hosts (Logs Ingestion data collection
    /// endpoints `{dce}.{region}.ingest.{suffix}`, and the token audience `https://{suffix}`).
    pub fn monitor_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "monitor.azure.com",
            Cloud::UsGovernment => "monitor.azure.us",
            Cloud::China => "monitor.azure.cn",
        }
    }

    /// The DNS suffix of Azure Communication Services resources (`{resource}.{suffix}`).
    pub fn communication_suffix(self) -> &'static str {
        match self {
            Cloud::Public => "communication.azure.com",
            Cloud::UsGovernment => "communication.azure.us",
            Cloud::China => "communication.azure.cn",
        }
    }

    /// The token scope of Azure Communication Services (email through ACS).
    pub fn communication_scope(self) -> String {
        format!("https://{}/.default", self.communication_suffix())
    }

    /// The Azure SDK's name for the cloud (the identity library's authority host).
    pub fn sdk_configuration(self) -> CloudConfiguration {
        match self {
            Cloud::Public => CloudConfiguration::AzurePublic,
            Cloud::UsGovernment => CloudConfiguration::AzureGovernment,
            Cloud::China => CloudConfiguration::AzureChina,
        }
    }

    /// `url` (a portal link built on [`PUBLIC_PORTAL`]) on this cloud's portal; any other URL
    /// is returned as it is.
    pub fn localise_portal_link(self, url: &str) -> String {
        match url.strip_prefix(PUBLIC_PORTAL) {
            Some(rest) if rest.starts_with('/') => format!("{}{rest}", self.portal()),
            _ => url.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_names_its_cloud() {
        for (text, cloud) in [
            ("public", Cloud::Public),
            ("AzureCloud", Cloud::Public),
            (" USGovernment ", Cloud::UsGovernment),
            ("AzureUSGovernment", Cloud::UsGovernment),
            ("china", Cloud::China),
            ("AzureChinaCloud", Cloud::China),
        ] {
            assert_eq!(text.parse::<Cloud>(), Ok(cloud), "{text}");
            assert_eq!(cloud.to_string().parse::<Cloud>(), Ok(cloud));
        }
        let error = "germany".parse::<Cloud>().unwrap_err().to_string();
        for valid in ["public", "usgovernment", "china", "AzureChinaCloud"] {
            assert!(error.contains(valid), "{error}");
        }
    }

    #[test]
    fn each_cloud_keeps_to_its_own_hosts() {
        for (cloud, tail) in [
            (Cloud::UsGovernment, [".usgovcloudapi.net", ".us"]),
            (Cloud::China, [".chinacloudapi.cn", ".cn"]),
        ] {
            let hosts = [
                cloud.arm_endpoint().to_owned(),
                cloud.authority_host().to_owned(),
                cloud.keyvault_scope(),
                cloud.portal().to_owned(),
                cloud.monitor_suffix().to_owned(),
                cloud.communication_scope(),
            ];
            for host in hosts {
                assert!(
                    tail.iter()
                        .any(|t| host.trim_end_matches("/.default").ends_with(t)),
                    "{cloud}: {host}"
                );
                assert!(!host.contains(".com"), "{cloud}: {host}");
            }
        }
        assert_eq!(
            Cloud::China.keyvault_scope(),
            "https://vault.azure.cn/.default"
        );
    }

    #[test]
    fn portal_links_move_to_the_clouds_portal() {
        let link = format!("{PUBLIC_PORTAL}/#resource/subscriptions/s");
        assert_eq!(
            Cloud::China.localise_portal_link(&link),
            "https://portal.azure.cn/#resource/subscriptions/s"
        );
        assert_eq!(Cloud::Public.localise_portal_link(&link), link);
        let other = "https://portal.azure.com.evil.example/#resource";
        assert_eq!(Cloud::UsGovernment.localise_portal_link(other), other);
    }
}
