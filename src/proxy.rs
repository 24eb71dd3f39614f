//! Which proxies are believed about the client: [`TrustProxy`].
//!
//! A request that came through a reverse proxy carries the client's address, the
//! scheme it used and the host it asked for in `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` or the standard `Forwarded` header
//! (RFC 7239). Anyone can send those headers, so they are believed only when the
//! peer is a proxy you trust. [`ContextLayer::trust_proxy`](crate::ContextLayer::trust_proxy)
//! says which peers those are; the request helpers
//! ([`RequestHeadExt::ip`](crate::request::RequestHeadExt::ip), `ips`, `protocol`, `secure`,
//! `host`) follow it.
//!
//! ```
//! use tower_context::{ContextLayer, TrustProxy};
//!
//! // Behind one load balancer on the private network.
//! let trust = TrustProxy::addresses(["10.0.0.0/8", "loopback"])?;
//! let layer = ContextLayer::new().trust_proxy(trust);
//! # Ok::<(), tower_context::proxy::InvalidIpRange>(())
//! ```
//!
//! # How the client is found
//!
//! The addresses form a chain, nearest first: the peer of the connection, then the
//! `X-Forwarded-For` entries from right to left (each proxy appends the address it
//! received the request from). Walking the chain, every address that is a trusted
//! proxy is skipped; the first one that is not is the client (Express's
//! `proxy-addr`). With [`TrustProxy::Hops`]`(n)` the first `n` addresses of the chain
//! are proxies, whoever they are (Koa's `maxIpsCount`); with [`TrustProxy::All`]
//! every one is, so the leftmost entry is the client (Koa's `proxy = true`).
//!
//! `X-Forwarded-Proto` and `X-Forwarded-Host` are read at the same depth: the value
//! written by the outermost trusted proxy. Only `http` and `https` are accepted as a
//! protocol, and a host must be a valid authority without user info; anything else
//! is ignored.
//!
//! The `X-Forwarded-*` headers win over `Forwarded` when a request has both (they are
//! what most proxies write); `Forwarded` is read when the matching `X-Forwarded-*`
//! header is absent. A proxy that writes only `Forwarded` must therefore remove
//! `X-Forwarded-*` headers sent by clients, and the other way round.
//!
//! When no [`Connection`](crate::Connection) is known for the request, the peer is
//! unknown: a list of trusted addresses then believes nothing, while
//! [`TrustProxy::All`] and [`TrustProxy::Hops`] still do (they do not look at the
//! peer).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use http::HeaderValue;

/// Which peers' `X-Forwarded-*` / `Forwarded` headers are believed.
///
/// ```
/// use tower_context::TrustProxy;
///
/// let none = TrustProxy::None; // the default: the peer is the client
/// let one_hop = TrustProxy::Hops(1); // one proxy in front, whoever it is
/// let listed = TrustProxy::addresses(["127.0.0.1", "10.0.0.0/8", "fd00::/8"])?;
/// assert!(listed.trusts("10.1.2.3".parse().unwrap()));
/// # Ok::<(), tower_context::proxy::InvalidIpRange>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustProxy {
    /// Believe no proxy headers (the default): the connection's peer is the client.
    #[default]
    None,
    /// Believe every proxy header: the leftmost `X-Forwarded-For` entry is the client.
    /// Only safe when every request reaches the app through a proxy that overwrites
    /// these headers.
    All,
    /// The nearest `n` addresses (the peer counts as the first) are proxies; the next
    /// one is the client. `Hops(1)` is one load balancer in front of the app.
    Hops(usize),
    /// Peers in these ranges are proxies; the first address from the right that is
    /// not in them is the client. Build it with [`TrustProxy::addresses`].
    Addresses(Vec<IpRange>),
}

impl TrustProxy {
    /// Trusts the given addresses and CIDR ranges (`"10.0.0.1"`, `"10.0.0.0/8"`,
    /// `"::1"`, `"fd00::/8"`), and the names `loopback`, `linklocal` and
    /// `uniquelocal` (private networks) as in Express.
    ///
    /// # Errors
    ///
    /// [`InvalidIpRange`] for the first item that is none of these.
    pub fn addresses<I>(items: I) -> Result<TrustProxy, InvalidIpRange>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut ranges = Vec::new();
        for item in items {
            let item = item.as_ref().trim();
            let named: &[&str] = match item {
                "loopback" => &["127.0.0.0/8", "::1/128"],
                "linklocal" => &["169.254.0.0/16", "fe80::/10"],
                "uniquelocal" => &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
                _ => {
                    ranges.push(item.parse()?);
                    continue;
                }
            };
            for range in named {
                ranges.push(range.parse()?);
            }
        }
        Ok(TrustProxy::Addresses(ranges))
    }

    /// Whether `addr` is a trusted proxy when it is the peer: for `Hops(n)` with
    /// `n > 0` and `All` any address is.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        match self {
            TrustProxy::None => false,
            TrustProxy::All => true,
            TrustProxy::Hops(n) => *n > 0,
            TrustProxy::Addresses(ranges) => ranges.iter().any(|r| r.contains(addr)),
        }
    }
}

/// An IP address or a CIDR range such as `10.0.0.0/8` or `fd00::/8`.
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are compared as the IPv4 address
/// they carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpRange {
    addr: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// The range of `addr` with a prefix length; `None` when the prefix is longer
    /// than the address (32 bits for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpRange> {
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpRange { addr, prefix })
    }

    /// Whether `addr` is in the range.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpRange {
    type Err = InvalidIpRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidIpRange(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
        let addr = addr.to_canonical();
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| invalid())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpRange::new(addr, prefix).ok_or_else(invalid)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A trusted-proxy entry that is neither an IP address, a CIDR range nor one of the
/// known names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidIpRange(String);

impl fmt::Display for InvalidIpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an IP address or CIDR range: {:?}", self.0)
    }
}

impl std::error::Error for InvalidIpRange {}

/// At most this many forwarded entries are read, nearest first: more is hostile.
const MAX_HOPS: usize = 32;

/// The proxy headers of one request, as read by [`resolve`].
#[derive(Clone, Copy, Default)]
pub(crate) struct ProxyHeaders<'a> {
    pub(crate) forwarded: Option<&'a HeaderValue>,
    pub(crate) x_forwarded_for: Option<&'a HeaderValue>,
    pub(crate) x_forwarded_proto: Option<&'a HeaderValue>,
    pub(crate) x_forwarded_host: Option<&'a HeaderValue>,
}

/// What the trusted proxies say about the client.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Resolved<'a> {
    /// The client's address; `None` when unknown.
    pub(crate) ip: Option<IpAddr>,
    /// The believed forwarded addresses, client first (Koa's `ips`).
    pub(crate) ips: Vec<IpAddr>,
    /// `http` or `https`, when a trusted proxy said so.
    pub(crate) proto: Option<&'static str>,
    /// The host the client asked for, when a trusted proxy said so.
    pub(crate) host: Option<&'a str>,
}

/// The request's protocol: `"https"` when it came over TLS (`tls`: what the
/// transport says, never the client) or a trusted proxy says so (`believed`, from
/// [`resolve`]), else `"http"`. The scheme of an absolute-form request line (or of
/// HTTP/2's `:scheme`) is the client's word, and is not believed.
pub(crate) fn protocol(tls: bool, believed: Option<&'static str>) -> &'static str {
    if tls {
        return "https";
    }
    believed.unwrap_or("http")
}

/// What is believed when no proxy is trusted: the peer, and nothing any header says.
pub(crate) fn untrusted<'a>(peer: Option<IpAddr>) -> Resolved<'a> {
    Resolved { ip: peer.map(|p| p.to_canonical()), ..Resolved::default() }
}

/// Decides what to believe about a request with peer `peer` (`None`: unknown).
pub(crate) fn resolve<'a>(
    trust: &TrustProxy,
    peer: Option<IpAddr>,
    headers: ProxyHeaders<'a>,
) -> Resolved<'a> {
    if matches!(trust, TrustProxy::None) {
        return untrusted(peer);
    }
    let peer = peer.map(|p| p.to_canonical());
    let forwarded: Vec<Element<'a>> = headers.forwarded.map(parse_forwarded).unwrap_or_default();

    // The chain nearest first: the peer, then the forwarded-for entries right to left.
    let mut chain: Vec<Option<IpAddr>> = vec![peer];
    match headers.x_forwarded_for.and_then(|v| v.to_str().ok()) {
        Some(xff) => chain.extend(xff.rsplit(',').take(MAX_HOPS).map(|e| parse_node(e.trim()))),
        None => chain.extend(forwarded.iter().rev().take(MAX_HOPS).map(|e| e.for_.and_then(parse_node))),
    }

    // How many of the nearest addresses are trusted proxies.
    let depth = match trust {
        TrustProxy::None => 0,
        TrustProxy::All => usize::MAX,
        TrustProxy::Hops(n) => *n,
        TrustProxy::Addresses(ranges) => {
            chain.iter().take_while(|addr| addr.is_some_and(|a| ranges.iter().any(|r| r.contains(a)))).count()
        }
    };
    if depth == 0 {
        return Resolved { ip: peer, ..Resolved::default() };
    }
    let client = depth.min(chain.len() - 1);
    let ips = chain[1..=client].iter().rev().filter_map(|a| *a).collect();

    let proto = match headers.x_forwarded_proto.and_then(|v| v.to_str().ok()) {
        Some(list) => at_depth(&list.split(',').collect::<Vec<_>>(), depth).and_then(parse_proto),
        None => at_depth(&forwarded, depth).and_then(|e| e.proto).and_then(parse_proto),
    };
    let host = match headers.x_forwarded_host.and_then(|v| v.to_str().ok()) {
        Some(list) => at_depth(&list.split(',').collect::<Vec<_>>(), depth).and_then(parse_host),
        None => at_depth(&forwarded, depth).and_then(|e| e.host).and_then(parse_host),
    };
    Resolved { ip: chain[client], ips, proto, host }
}

/// The entry written by the outermost of `depth` trusted proxies, when each appended
/// one entry; the leftmost when there are fewer entries than proxies.
fn at_depth<T: Copy>(list: &[T], depth: usize) -> Option<T> {
    list.get(list.len().saturating_sub(depth)).copied()
}

fn parse_proto(value: &str) -> Option<&'static str> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("https") {
        Some("https")
    } else if value.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// A host (with optional port) a proxy reported, if it is a plausible authority.
pub(crate) fn parse_host(value: &str) -> Option<&str> {
    let value = value.trim();
    if value.contains('@') {
        return None;
    }
    let authority: http::uri::Authority = value.parse().ok()?;
    (!authority.host().is_empty()).then_some(value)
}

/// An address as written in `X-Forwarded-For` or a `Forwarded` `for=`: a bare IP,
/// an IPv4 with a port, or a bracketed IPv6 with or without a port. Anything else
/// (`unknown`, an obfuscated `_id`) is `None`.
fn parse_node(value: &str) -> Option<IpAddr> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sock) = value.parse::<SocketAddr>() {
        return Some(sock.ip().to_canonical());
    }
    let inner = value.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(|ip| IpAddr::V6(ip).to_canonical())
}

/// One element of a `Forwarded` header: its `for`, `proto` and `host` parameters,
/// unquoted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Element<'a> {
    for_: Option<&'a str>,
    proto: Option<&'a str>,
    host: Option<&'a str>,
}

/// Parses a `Forwarded` header (RFC 7239) into its elements, leftmost first. A
/// quoted value with a backslash escape or a comma is not a valid node, host or
/// scheme, so splitting on `,` and `;` first and unquoting after is enough.
fn parse_forwarded(value: &HeaderValue) -> Vec<Element<'_>> {
    let Ok(value) = value.to_str() else { return Vec::new() };
    let mut elements: Vec<Element<'_>> = value
        .rsplit(',')
        .take(MAX_HOPS)
        .map(|element| {
            let mut parsed = Element::default();
            for pair in element.split(';') {
                let Some((name, raw)) = pair.split_once('=') else { continue };
                let raw = raw.trim();
                let value = match raw.strip_prefix('"') {
                    Some(rest) => match rest.strip_suffix('"') {
                        Some(inner) if !inner.contains(['\\', '"']) => inner,
                        _ => continue,
                    },
                    None => raw,
                };
                let name = name.trim();
                let slot = if name.eq_ignore_ascii_case("for") {
                    &mut parsed.for_
                } else if name.eq_ignore_ascii_case("proto") {
                    &mut parsed.proto
                } else if name.eq_ignore_ascii_case("host") {
                    &mut parsed.host
                } else {
                    continue;
                };
                slot.get_or_insert(value);
            }
            parsed
        })
        .collect();
    elements.reverse();
    elements
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn ranges_parse_and_match() {
        let range: IpRange = "10.0.0.0/8".parse().unwrap();
        assert!(range.contains(ip("10.200.1.1")));
        assert!(!range.contains(ip("11.0.0.1")));
        assert!(range.contains(ip("::ffff:10.1.1.1")));
        let v6: IpRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let single: IpRange = "::1".parse().unwrap();
        assert_eq!(single.to_string(), "::1/128");
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", "", "1.2.3.4/-1"] {
            assert!(bad.parse::<IpRange>().is_err(), "{bad}");
        }
        let named = TrustProxy::addresses(["loopback", "uniquelocal"]).unwrap();
        assert!(named.trusts(ip("127.0.0.1")));
        assert!(named.trusts(ip("192.168.1.1")));
        assert!(!named.trusts(ip("8.8.8.8")));
        assert!(TrustProxy::addresses(["loopback", "bogus"]).is_err());
    }

    #[test]
    fn untrusted_peers_are_not_believed() {
        let headers = ProxyHeaders {
            x_forwarded_for: Some(&hv("1.2.3.4")),
            x_forwarded_proto: Some(&hv("https")),
            x_forwarded_host: Some(&hv("evil.example")),
            ..ProxyHeaders::default()
        };
        let got = resolve(&TrustProxy::None, Some(ip("9.9.9.9")), headers);
        assert_eq!(got, Resolved { ip: Some(ip("9.9.9.9")), ..Resolved::default() });
        let list = TrustProxy::addresses(["10.0.0.0/8"]).unwrap();
        let got = resolve(&list, Some(ip("9.9.9.9")), headers);
        assert_eq!(got, Resolved { ip: Some(ip("9.9.9.9")), ..Resolved::default() });
        // Peer unknown: a list trusts nothing.
        let got = resolve(&list, None, headers);
        assert_eq!(got, Resolved::default());
    }

    #[test]
    fn a_trusted_list_walks_right_to_left() {
        let xff = hv("6.6.6.6, 1.2.3.4, 10.0.0.2");
        let headers = ProxyHeaders { x_forwarded_for: Some(&xff), ..ProxyHeaders::default() };
        let list = TrustProxy::addresses(["10.0.0.0/8"]).unwrap();
        let got = resolve(&list, Some(ip("10.0.0.1")), headers);
        // 6.6.6.6 was written by the client itself: not believed.
        assert_eq!(got.ip, Some(ip("1.2.3.4")));
        assert_eq!(got.ips, vec![ip("1.2.3.4"), ip("10.0.0.2")]);
    }

    #[test]
    fn hops_and_all() {
        let xff = hv("6.6.6.6, 1.2.3.4, 10.0.0.2");
        let headers = ProxyHeaders { x_forwarded_for: Some(&xff), ..ProxyHeaders::default() };
        let peer = Some(ip("10.0.0.1"));
        assert_eq!(resolve(&TrustProxy::Hops(1), peer, headers).ip, Some(ip("10.0.0.2")));
        assert_eq!(resolve(&TrustProxy::Hops(2), peer, headers).ip, Some(ip("1.2.3.4")));
        assert_eq!(resolve(&TrustProxy::Hops(9), peer, headers).ip, Some(ip("6.6.6.6")));
        let all = resolve(&TrustProxy::All, None, headers);
        assert_eq!(all.ip, Some(ip("6.6.6.6")));
        assert_eq!(all.ips, vec![ip("6.6.6.6"), ip("1.2.3.4"), ip("10.0.0.2")]);
        assert_eq!(resolve(&TrustProxy::Hops(0), peer, headers).ip, peer);
    }

    #[test]
    fn entries_with_ports_brackets_and_garbage() {
        let xff = hv("garbage, [2001:db8::1]:443, 1.2.3.4:5678");
        let headers = ProxyHeaders { x_forwarded_for: Some(&xff), ..ProxyHeaders::default() };
        let got = resolve(&TrustProxy::All, None, headers);
        assert_eq!(got.ip, None);
        assert_eq!(got.ips, vec![ip("2001:db8::1"), ip("1.2.3.4")]);
        let got = resolve(&TrustProxy::Hops(2), None, headers);
        assert_eq!(got.ip, Some(ip("2001:db8::1")));
        // A trusted proxy that reports "unknown" hides the client; no guessing past it.
        let xff = hv("1.1.1.1, unknown");
        let headers = ProxyHeaders { x_forwarded_for: Some(&xff), ..ProxyHeaders::default() };
        let list = TrustProxy::addresses(["10.0.0.0/8"]).unwrap();
        assert_eq!(resolve(&list, Some(ip("10.0.0.1")), headers).ip, None);
    }

    #[test]
    fn proto_and_host_at_the_trusted_depth() {
        let headers = ProxyHeaders {
            x_forwarded_for: Some(&hv("1.2.3.4")),
            x_forwarded_proto: Some(&hv("http, https")),
            x_forwarded_host: Some(&hv("spoof.example, shop.example:8443")),
            ..ProxyHeaders::default()
        };
        let got = resolve(&TrustProxy::Hops(1), None, headers);
        assert_eq!(got.proto, Some("https"));
        assert_eq!(got.host, Some("shop.example:8443"));
        let got = resolve(&TrustProxy::All, None, headers);
        assert_eq!(got.proto, Some("http"));
        assert_eq!(got.host, Some("spoof.example"));
        let bad = ProxyHeaders {
            x_forwarded_proto: Some(&hv("gopher")),
            x_forwarded_host: Some(&hv("user@host")),
            ..ProxyHeaders::default()
        };
        let got = resolve(&TrustProxy::All, None, bad);
        assert_eq!((got.proto, got.host), (None, None));
        let empty_host = ProxyHeaders { x_forwarded_host: Some(&hv(":8080")), ..ProxyHeaders::default() };
        assert_eq!(resolve(&TrustProxy::All, None, empty_host).host, None);
    }

    #[test]
    fn forwarded_header() {
        let fwd =
            hv(r#"for=6.6.6.6;proto=http, for="[2001:db8:cafe::17]:4711";proto=https;host="api.example""#);
        let headers = ProxyHeaders { forwarded: Some(&fwd), ..ProxyHeaders::default() };
        let got = resolve(&TrustProxy::Hops(1), Some(ip("10.0.0.1")), headers);
        assert_eq!(got.ip, Some(ip("2001:db8:cafe::17")));
        assert_eq!(got.proto, Some("https"));
        assert_eq!(got.host, Some("api.example"));
        let odd = hv(r#"for=_hidden;by="\"x", For=1.2.3.4"#);
        let elements = parse_forwarded(&odd);
        assert_eq!(elements[0].for_, Some("_hidden"));
        assert_eq!(elements[1].for_, Some("1.2.3.4"));
        assert!(parse_forwarded(&hv(";;,,=,;=;")).iter().all(|e| *e == Element::default()));
        // X-Forwarded-For wins when both are present.
        let xff = hv("5.5.5.5");
        let both = ProxyHeaders { x_forwarded_for: Some(&xff), ..headers };
        assert_eq!(resolve(&TrustProxy::All, None, both).ip, Some(ip("5.5.5.5")));
    }

    #[test]
    fn hostile_lengths_are_bounded() {
        let long = std::iter::repeat_n("1.1.1.1", 10_000).collect::<Vec<_>>().join(",");
        let xff = HeaderValue::from_str(&long).unwrap();
        let headers = ProxyHeaders { x_forwarded_for: Some(&xff), ..ProxyHeaders::default() };
        assert_eq!(resolve(&TrustProxy::All, None, headers).ips.len(), MAX_HOPS);
    }
}
