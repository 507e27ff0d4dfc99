//! Where to deliver a domain's mail: the relay (`[outbound] relay`), or the domain's MX
//! hosts from DNS. Behind the [`Resolve`] trait so tests never touch the internet: they
//! use the relay setting or a [`StaticResolver`] mapping a domain to a loopback port.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use mail_auth::common::cache::NoCache;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::{DnsError, IpLookupStrategy, MX, MessageAuthenticator, RecordSet};

/// RFC 5321 §4.5.4 / IANA: MX delivery is to port 25.
pub const SMTP_PORT: u16 = 25;

/// Addresses tried per MX host (A then AAAA), so one host with a huge record set cannot
/// use up a whole attempt.
const MAX_ADDRS_PER_HOST: usize = 4;

/// One host to try, with its addresses in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name: the TLS server name for STARTTLS and the name in logs and bounces.
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The domain cannot receive mail (no such domain, null MX): bounce.
    #[error("{0}")]
    Permanent(String),
    /// DNS trouble: try again at the next attempt.
    #[error("{0}")]
    Temporary(String),
}

pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<Target>, ResolveError>> + Send + 'a>>;

/// The hosts to try for a recipient domain, most preferred first.
pub trait Resolve: Send + Sync + fmt::Debug {
    fn resolve<'a>(&'a self, domain: &'a str) -> ResolveFuture<'a>;
}

/// The relay as one target: an IP address as is, a name through the system resolver.
pub async fn relay_target(host: &str, port: u16) -> Result<Target, ResolveError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| ResolveError::Temporary(format!("resolving relay {bare}: {e}")))?
            .collect(),
    };
    Ok(Target {
        host: bare.to_owned(),
        addrs,
    })
}

/// MX lookups through DNS (mail-auth's hickory resolver, reading /etc/resolv.conf).
#[derive(Clone)]
pub struct DnsResolver {
    /// Err: the system resolver configuration could not be read; every lookup is then
    /// a temporary failure (the queue keeps the mail) instead of a startup failure.
    auth: Result<MessageAuthenticator, String>,
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsResolver")
            .field("usable", &self.auth.is_ok())
            .finish()
    }
}

impl DnsResolver {
    pub fn from_system_conf() -> DnsResolver {
        let auth = MessageAuthenticator::new_system_conf().map_err(|e| e.to_string());
        if let Err(e) = &auth {
            tracing::error!(error = %e, "outbound: cannot read the system DNS configuration");
        }
        DnsResolver { auth }
    }

    async fn addresses(auth: &MessageAuthenticator, host: &str) -> Result<Vec<IpAddr>, String> {
        auth.ip_lookup(
            host,
            IpLookupStrategy::Ipv4thenIpv6,
            MAX_ADDRS_PER_HOST,
            None::<&NoCache<Box<str>, RecordSet<std::net::Ipv4Addr>>>,
            None::<&NoCache<Box<str>, RecordSet<std::net::Ipv6Addr>>>,
        )
        .await
        .map_err(|e| format!("address of {host}: {e}"))
    }

    async fn lookup(&self, domain: &str) -> Result<Vec<Target>, ResolveError> {
        let auth = self
            .auth
            .as_ref()
            .map_err(|e| ResolveError::Temporary(format!("no DNS resolver: {e}")))?;
        let hosts = match auth
            .mx_lookup(domain, None::<&NoCache<Box<str>, RecordSet<MX>>>)
            .await
        {
            Ok(set) => mx_hosts(&set.rrset, domain)?,
            Err(mail_auth::Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain))) => {
                return Err(ResolveError::Permanent(format!(
                    "domain {domain} does not exist"
                )));
            }
            // RFC 5321 §5.1: no MX record, so the domain itself is the implicit MX.
            Err(mail_auth::Error::Dns(DnsError::RecordNotFound(_))) => vec![domain.to_owned()],
            Err(e) => {
                return Err(ResolveError::Temporary(format!(
                    "MX lookup for {domain}: {e}"
                )));
            }
        };
        let mut targets = Vec::with_capacity(hosts.len());
        let mut last_error = None;
        for host in hosts {
            match Self::addresses(auth, &host).await {
                Ok(ips) if !ips.is_empty() => targets.push(Target {
                    addrs: ips
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, SMTP_PORT))
                        .collect(),
                    host,
                }),
                Ok(_) => last_error = Some(format!("no address for {host}")),
                Err(e) => last_error = Some(e),
            }
        }
        if targets.is_empty() {
            return Err(ResolveError::Temporary(
                last_error.unwrap_or_else(|| format!("no mail host found for {domain}")),
            ));
        }
        Ok(targets)
    }
}

/// MX exchanges in preference order (mail-auth sorts the groups). A lone `.` is the
/// null MX of RFC 7505: the domain accepts no mail.
fn mx_hosts(records: &[MX], domain: &str) -> Result<Vec<String>, ResolveError> {
    let hosts: Vec<String> = records
        .iter()
        .flat_map(|mx| mx.exchanges.iter())
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    if hosts.iter().any(String::is_empty) {
        return Err(ResolveError::Permanent(format!(
            "domain {domain} accepts no mail (null MX, RFC 7505)"
        )));
    }
    if hosts.is_empty() {
        // An empty answer: treat as "no MX" (implicit MX).
        return Ok(vec![domain.to_owned()]);
    }
    Ok(hosts)
}

impl Resolve for DnsResolver {
    fn resolve<'a>(&'a self, domain: &'a str) -> ResolveFuture<'a> {
        Box::pin(self.lookup(domain))
    }
}

/// A fixed domain → targets table (tests, or a static transport map).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    map: HashMap<String, Result<Vec<Target>, ResolveError>>,
}

impl StaticResolver {
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Mail for `domain` goes to `addr` (named `domain` for TLS and logs).
    pub fn route(mut self, domain: &str, addr: SocketAddr) -> StaticResolver {
        self.map.insert(
            domain.to_lowercase(),
            Ok(vec![Target {
                host: domain.to_lowercase(),
                addrs: vec![addr],
            }]),
        );
        self
    }

    /// Mail for `domain` tries these hosts in order.
    pub fn targets(mut self, domain: &str, targets: Vec<Target>) -> StaticResolver {
        self.map.insert(domain.to_lowercase(), Ok(targets));
        self
    }

    /// Lookups for `domain` fail this way.
    pub fn fail(mut self, domain: &str, error: ResolveError) -> StaticResolver {
        self.map.insert(domain.to_lowercase(), Err(error));
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, domain: &'a str) -> ResolveFuture<'a> {
        let answer = self
            .map
            .get(&domain.to_lowercase())
            .cloned()
            .unwrap_or_else(|| {
                Err(ResolveError::Permanent(format!(
                    "domain {domain} does not exist"
                )))
            });
        Box::pin(async move { answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(preference: u16, hosts: &[&str]) -> MX {
        MX {
            preference,
            exchanges: hosts.iter().map(|h| Box::<str>::from(*h)).collect(),
        }
    }

    #[test]
    fn mx_hosts_keep_preference_order_and_refuse_null_mx() {
        let hosts = mx_hosts(
            &[mx(5, &["MX1.example.org."]), mx(10, &["mx2.example.org."])],
            "example.org",
        );
        assert_eq!(
            hosts,
            Ok(vec![
                "mx1.example.org".to_owned(),
                "mx2.example.org".to_owned()
            ])
        );
        assert!(matches!(
            mx_hosts(&[mx(0, &["."])], "example.org"),
            Err(ResolveError::Permanent(_))
        ));
        assert_eq!(
            mx_hosts(&[], "example.org"),
            Ok(vec!["example.org".to_owned()])
        );
    }

    #[tokio::test]
    async fn static_resolver_routes_and_refuses_unknown_domains() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 2525));
        let r = StaticResolver::new()
            .route("Example.org", addr)
            .fail("down.test", ResolveError::Temporary("SERVFAIL".into()));
        let t = r.resolve("example.ORG").await.expect("routed");
        assert_eq!(t[0].addrs, [addr]);
        assert_eq!(
            r.resolve("down.test").await,
            Err(ResolveError::Temporary("SERVFAIL".into()))
        );
        assert!(matches!(
            r.resolve("elsewhere.test").await,
            Err(ResolveError::Permanent(_))
        ));
    }

    #[tokio::test]
    async fn relay_ip_needs_no_lookup() {
        let t = relay_target("127.0.0.1", 2525).await.expect("ip");
        assert_eq!(t.addrs, [SocketAddr::from(([127, 0, 0, 1], 2525))]);
        let t = relay_target("[::1]", 25).await.expect("ipv6");
        assert_eq!(t.host, "::1");
    }
}
