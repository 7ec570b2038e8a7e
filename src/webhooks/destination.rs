//! Where a webhook may be delivered. A webhook URL is chosen by whoever holds an admin key,
//! and the server sends from inside the network, so without limits a subscription could
//! read cloud metadata (`169.254.169.254`) or probe internal services (server-side request
//! forgery). Deliveries therefore go only to public addresses:
//!
//! - at registration, a URL whose host is a literal special address is refused (the URL
//!   parser has already turned `127.1`, `2130706433` and `0x7f.1` into `127.0.0.1`);
//! - at delivery, a literal host is checked again (the HTTP client never resolves
//!   literals), and names are resolved by a resolver that drops every special address, so
//!   a name that points inside the network — at once or after a DNS rebinding — reaches
//!   nothing;
//! - redirects are not followed (they would carry the signature elsewhere) and no proxy
//!   from the environment is used.
//!
//! `[webhooks] allow_private` names the `host:port` receivers an administrator places on
//! the internal network on purpose; only those skip the address checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::config::WebhooksConfig;
use crate::error::{Error, Result};

/// The one reason a delivery to a special address fails, as stored with the job.
pub const REFUSED: &str = "refused: address not allowed";

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0 // "this network"
        || a == 10 // RFC 1918
        || a == 127 // loopback
        || (a == 100 && (64..128).contains(&b)) // shared address space (carrier NAT)
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // RFC 1918
        || (a == 192 && b == 168) // RFC 1918
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224; // multicast, reserved, broadcast
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let special = s[..6] == [0; 6] // ::, ::1 and IPv4-compatible ::a.b.c.d
        || s[..6] == [0, 0, 0, 0, 0, 0xffff] // IPv4-mapped ::ffff:a.b.c.d
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64 64:ff9b::/96
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local NAT64 64:ff9b:1::/48
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x200) // IETF protocol assignments incl. Teredo
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || s[0] == 0x2002 // 6to4, which embeds an IPv4 address
        || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local fec0::/10
        || (s[0] & 0xff00) == 0xff00; // multicast
    !special
}

/// The `host:port` receivers allowed on special addresses (`[webhooks] allow_private`).
#[derive(Debug, Clone, Default)]
pub struct AllowPrivate(Vec<(String, u16)>);

impl AllowPrivate {
    /// Reads the configured entries; an entry that is not exactly `host:port` is an error
    /// naming it.
    pub fn parse(entries: &[String]) -> std::result::Result<Self, String> {
        let cfg = WebhooksConfig {
            allow_private: entries.to_vec(),
        };
        cfg.private_receivers().map(AllowPrivate)
    }

    /// Whether `url` names one of the allowed receivers (host and port as the URL parser
    /// normalises them, so `127.1:80` and `127.0.0.1:80` are the same).
    pub fn allows(&self, url: &Url) -> bool {
        match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => self.0.iter().any(|(h, p)| h == host && *p == port),
            _ => false,
        }
    }
}

/// The literal address a URL names, if its host is one. The parser has normalised every
/// IPv4 spelling to dotted decimal, so a name never parses as an address.
fn literal(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Refuses at registration a URL whose host is already a special address.
pub fn check_registration(url: &Url, allow: &AllowPrivate) -> Result<()> {
    match literal(url) {
        Some(ip) if !is_public(ip) && !allow.allows(url) => Err(Error::invalid(
            "webhook 地址不能指向本机、内网或保留地址 \
             (url points at a loopback, private or reserved address; \
             list deliberate internal receivers in [webhooks] allow_private)",
        )),
        _ => Ok(()),
    }
}

/// Why a delivery did not leave: the address is not allowed.
#[derive(Debug)]
pub struct AddressRefused;

impl std::fmt::Display for AddressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REFUSED)
    }
}

impl std::error::Error for AddressRefused {}

/// Resolves names through the system resolver and keeps only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(Box::new(AddressRefused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The HTTP clients webhook deliveries use, and which one a URL gets.
#[derive(Clone)]
pub struct Destinations {
    allow: AllowPrivate,
    /// Public addresses only.
    public: reqwest::Client,
    /// For the allowed internal receivers: any address, still no redirects or proxy.
    internal: reqwest::Client,
}

impl Destinations {
    pub fn new(cfg: &WebhooksConfig, timeout: Duration) -> anyhow::Result<Self> {
        let allow = AllowPrivate::parse(&cfg.allow_private)
            .map_err(|m| anyhow::anyhow!("webhooks.allow_private: {m}"))?;
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(timeout)
                .user_agent(concat!("closeloop/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Destinations {
            allow,
            public: builder()
                .dns_resolver(Arc::new(PublicOnly))
                .build()
                .context("cannot build the webhook HTTP client")?,
            internal: builder()
                .build()
                .context("cannot build the webhook HTTP client")?,
        })
    }

    /// The client for `url`, or the refusal when its literal host is a special address.
    pub fn client_for(&self, url: &Url) -> std::result::Result<&reqwest::Client, AddressRefused> {
        if self.allow.allows(url) {
            return Ok(&self.internal);
        }
        match literal(url) {
            Some(ip) if !is_public(ip) => Err(AddressRefused),
            _ => Ok(&self.public),
        }
    }
}

/// Whether a send failed because the resolver found only special addresses.
pub fn was_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<AddressRefused>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(url: &str) -> IpAddr {
        literal(&Url::parse(url).unwrap()).unwrap()
    }

    #[test]
    fn special_addresses_are_not_public() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "3fff::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "2400:3200::1",
            "2606:4700::1111",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn odd_spellings_of_an_address_are_that_address() {
        for url in [
            "http://127.1:8080/",
            "http://2130706433:8080/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.0.0.1./",
            "http://0/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
        ] {
            let ip = host_of(url);
            assert!(!is_public(ip), "{url} is {ip}");
            let refused = check_registration(&Url::parse(url).unwrap(), &AllowPrivate::default());
            assert!(refused.is_err(), "{url}");
        }
        let public = Url::parse("https://hooks.example.com/x").unwrap();
        assert!(check_registration(&public, &AllowPrivate::default()).is_ok());
    }

    #[test]
    fn allow_private_names_host_and_port() {
        let allow = AllowPrivate::parse(&["127.0.0.1:8080".into(), "[::1]:443".into()]).unwrap();
        for url in [
            "http://127.0.0.1:8080/x",
            "http://127.1:8080/y",
            "https://[::1]/z",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(allow.allows(&url), "{url}");
            assert!(check_registration(&url, &allow).is_ok(), "{url}");
        }
        for url in [
            "http://127.0.0.1:8081/x",
            "http://[::1]/",
            "http://10.0.0.1:8080/",
        ] {
            let url = Url::parse(url).unwrap();
            assert!(!allow.allows(&url), "{url}");
            assert!(check_registration(&url, &allow).is_err(), "{url}");
        }
        for bad in [
            "127.0.0.1",
            "host",
            "http://h:1",
            "h:1/path",
            "u@h:1",
            "h:99999",
        ] {
            assert!(AllowPrivate::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
