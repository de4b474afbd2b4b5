//! Settings shared by every command: which cloud (or custom endpoints) to talk to.
//!
//! Resolution order for each endpoint: command-line flag, then environment
//! (`COSTLAKE_MANAGEMENT_ENDPOINT`, `AZURE_AUTHORITY_HOST`), then the named cloud's default.
//! Plain `http` is accepted only for loopback hosts, so a mistyped endpoint can never send a
//! bearer token over the network in clear text.

use url::Url;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{what} `{value}` is not a URL: {reason}")]
    BadUrl {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "{what} `{value}` uses plain http to a non-loopback host; use https (http is allowed only for 127.0.0.0/8, ::1 and localhost)"
    )]
    InsecureHttp { what: &'static str, value: String },
    #[error(
        "unknown cloud `{0}`: use public, china, usgov, or set --management-endpoint and --authority-host"
    )]
    UnknownCloud(String),
    #[error("{0}")]
    Invalid(String),
}

/// The two endpoints a cloud is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEndpoints {
    /// ARM, e.g. `https://management.azure.com/`. The bearer token is only ever sent to this host.
    pub management: Url,
    /// Entra ID, e.g. `https://login.microsoftonline.com/`.
    pub authority: Url,
}

impl CloudEndpoints {
    pub fn named(cloud: &str) -> Result<Self, ConfigError> {
        let (m, a) = match cloud.to_ascii_lowercase().as_str() {
            "public" | "azurecloud" | "azurepubliccloud" => (
                "https://management.azure.com/",
                "https://login.microsoftonline.com/",
            ),
            "china" | "azurechinacloud" => (
                "https://management.chinacloudapi.cn/",
                "https://login.chinacloudapi.cn/",
            ),
            "usgov" | "usgovernment" | "azureusgovernment" => (
                "https://management.usgovcloudapi.net/",
                "https://login.microsoftonline.us/",
            ),
            other => return Err(ConfigError::UnknownCloud(other.to_owned())),
        };
        Ok(Self {
            management: checked_url("management endpoint", m)?,
            authority: checked_url("authority host", a)?,
        })
    }

    /// A cloud, then overrides from flags and environment.
    pub fn resolve(
        cloud: Option<&str>,
        management: Option<&str>,
        authority: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let env_m = std::env::var("COSTLAKE_MANAGEMENT_ENDPOINT")
            .ok()
            .filter(|s| !s.is_empty());
        let env_a = std::env::var("AZURE_AUTHORITY_HOST")
            .ok()
            .filter(|s| !s.is_empty());
        let mut c = Self::named(cloud.unwrap_or("public"))?;
        if let Some(m) = management.map(str::to_owned).or(env_m) {
            c.management = checked_url("management endpoint", &m)?;
        }
        if let Some(a) = authority.map(str::to_owned).or(env_a) {
            c.authority = checked_url("authority host", &a)?;
        }
        Ok(c)
    }

    /// The token scope for this management endpoint (`https://management.azure.com/.default`).
    pub fn arm_scope(&self) -> String {
        format!("{}.default", with_slash(self.management.as_str()))
    }
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    }
}

/// Parses `value`, refusing plain http except to loopback.
pub fn checked_url(what: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(&with_slash(value.trim())).map_err(|e| ConfigError::BadUrl {
        what,
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(ConfigError::InsecureHttp {
            what,
            value: value.to_owned(),
        }),
        other => Err(ConfigError::BadUrl {
            what,
            value: value.to_owned(),
            reason: format!("scheme `{other}` is not http(s)"),
        }),
    }
}

pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// True when `url` points at the same scheme, host and port as `base`.
pub fn same_origin(url: &Url, base: &Url) -> bool {
    url.scheme() == base.scheme()
        && url.host_str() == base.host_str()
        && url.port_or_known_default() == base.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_for_loopback() {
        assert!(checked_url("m", "http://127.0.0.1:8080").is_ok());
        assert!(checked_url("m", "http://127.9.9.9").is_ok());
        assert!(checked_url("m", "http://[::1]:1").is_ok());
        assert!(checked_url("m", "http://localhost:1").is_ok());
        assert!(matches!(
            checked_url("m", "http://10.0.0.1"),
            Err(ConfigError::InsecureHttp { .. })
        ));
        assert!(matches!(
            checked_url("m", "http://management.azure.com"),
            Err(ConfigError::InsecureHttp { .. })
        ));
        assert!(checked_url("m", "ftp://x").is_err());
    }

    #[test]
    fn clouds() {
        let c = CloudEndpoints::named("china").unwrap();
        assert_eq!(
            c.arm_scope(),
            "https://management.chinacloudapi.cn/.default"
        );
        assert!(CloudEndpoints::named("mars").is_err());
        let c = CloudEndpoints::resolve(Some("usgov"), Some("http://127.0.0.1:9"), None).unwrap();
        assert_eq!(c.management.as_str(), "http://127.0.0.1:9/");
        assert_eq!(c.authority.host_str(), Some("login.microsoftonline.us"));
    }
}
