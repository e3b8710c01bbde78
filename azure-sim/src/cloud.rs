//! Which Azure cloud the simulator stands in for. Inside, the simulator speaks the public
//! cloud's names; at its edge, a sovereign cloud's names are translated: requests to
//! `management.chinacloudapi.cn` are served as ARM, `{vault}.vault.azure.cn` as Key Vault,
//! token requests for the cloud's audiences are answered, and every host name in a response
//! (vault URIs, key ids, `nextLink`s, `Location`s, Key Vault's challenge) is the cloud's own.
//! A request to another cloud's host is refused (`HostNotFound`) and recorded under the host
//! it named, so a test sees every host a client tried.

use serde_json::Value;

/// An Azure cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimCloud {
    /// Azure (global): no translation.
    #[default]
    Public,
    /// Azure Government.
    UsGovernment,
    /// Azure operated by 21Vianet.
    China,
}

/// The public cloud's ARM host.
const PUBLIC_ARM: &str = "management.azure.com";
/// The public cloud's Key Vault suffix.
const PUBLIC_VAULT: &str = "vault.azure.net";

impl SimCloud {
    /// The ARM host.
    pub fn arm_host(self) -> &'static str {
        match self {
            SimCloud::Public => PUBLIC_ARM,
            SimCloud::UsGovernment => "management.usgovcloudapi.net",
            SimCloud::China => "management.chinacloudapi.cn",
        }
    }

    /// The Key Vault DNS suffix.
    pub fn vault_suffix(self) -> &'static str {
        match self {
            SimCloud::Public => PUBLIC_VAULT,
            SimCloud::UsGovernment => "vault.usgovcloudapi.net",
            SimCloud::China => "vault.azure.cn",
        }
    }

    /// Every host name the simulator's certificate covers for this cloud.
    pub fn server_names(self) -> [String; 2] {
        [
            self.arm_host().to_owned(),
            format!("*.{}", self.vault_suffix()),
        ]
    }

    /// Whether `host` belongs to another cloud than this one (public names in a sovereign
    /// cloud): the simulator refuses it.
    pub fn is_foreign(self, host: &str) -> bool {
        self != SimCloud::Public && (host == PUBLIC_ARM || host.ends_with(".vault.azure.net"))
    }

    /// `text` with this cloud's names replaced by the public ones the simulator speaks.
    pub fn inbound(self, text: &str) -> String {
        if self == SimCloud::Public {
            return text.to_owned();
        }
        text.replace(self.arm_host(), PUBLIC_ARM)
            .replace(self.vault_suffix(), PUBLIC_VAULT)
    }

    /// `text` with the public names replaced by this cloud's.
    pub fn outbound(self, text: &str) -> String {
        if self == SimCloud::Public {
            return text.to_owned();
        }
        text.replace(PUBLIC_ARM, self.arm_host())
            .replace(PUBLIC_VAULT, self.vault_suffix())
    }

    /// A JSON body with the public names replaced by this cloud's.
    pub fn outbound_json(self, body: Value) -> Value {
        if self == SimCloud::Public {
            return body;
        }
        serde_json::from_str(&self.outbound(&body.to_string())).unwrap_or(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cross_the_edge_both_ways() {
        let key = "https://kv1.vault.azure.net/keys/k/1";
        let china = SimCloud::China.outbound(key);
        assert_eq!(china, "https://kv1.vault.azure.cn/keys/k/1");
        assert_eq!(SimCloud::China.inbound(&china), key);
        assert!(SimCloud::China.is_foreign("kv1.vault.azure.net"));
        assert!(!SimCloud::China.is_foreign("kv1.vault.azure.cn"));
        assert!(!SimCloud::Public.is_foreign("management.azure.com"));
        assert_eq!(
            SimCloud::UsGovernment.outbound(key),
            "https://kv1.vault.usgovcloudapi.net/keys/k/1"
        );
    }
}
