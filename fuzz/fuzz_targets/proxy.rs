//! X-Forwarded-For / X-Forwarded-Proto / X-Forwarded-Host / Forwarded parsing under
//! each `TrustProxy` setting, through `RequestHeadExt` on the `Context` and on the request
//! inside the layer (peer from a `Connection` in the extensions).
//!
//! Checked:
//! - nothing panics: headers raw or built from well-formed and broken nodes, any
//!   `Hops(n)`, any address list (`TrustProxy::addresses` on arbitrary strings);
//! - the context and the request agree on every helper;
//! - `TrustProxy::None`, or a peer that is not trusted, believes nothing: `ip` is the
//!   peer, `ips` is empty and the protocol is the URI's;
//! - an address list with no known peer believes nothing;
//! - `ips` holds at most 32 entries; `ip` is the peer or the first of `ips`;
//! - `protocol` is `http` or `https` and agrees with `secure`; `hostname` starts `host`;
//!   `origin` and `href` exist exactly when `host` does (for a relative URI).

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

use http::{Request, Uri};
use tower_context::proxy::IpRange;
use tower_context::request::RequestHeadExt;
use tower_context::{Connection, ContextLayer, TrustProxy};

#[derive(Arbitrary, Debug)]
struct Input {
    trust: Trust,
    peer: Option<Ip>,
    peer_port: u16,
    uri: Option<String>,
    host: Option<Vec<u8>>,
    xff: Vec<Header>,
    forwarded: Vec<ForwardedHeader>,
    xfp: Vec<Vec<u8>>,
    xfh: Vec<Vec<u8>>,
    offset: u8,
}

#[derive(Arbitrary, Debug)]
enum Trust {
    None,
    All,
    Hops(usize),
    SmallHops(u8),
    Addresses(Vec<String>),
    Ranges(Vec<(Ip, u8)>),
    Named(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
    Mapped([u8; 4]),
}

impl Ip {
    fn addr(self) -> IpAddr {
        match self {
            Ip::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
            Ip::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
            Ip::Mapped(b) => IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped()),
        }
    }
}

/// A node as proxies write it, or something that is not one.
#[derive(Arbitrary, Debug)]
enum Node {
    Bare(Ip),
    WithPort(Ip, u16),
    Bracketed(Ip),
    Unknown,
    Obfuscated(String),
    Raw(String),
}

impl Node {
    fn text(&self) -> String {
        match self {
            Node::Bare(ip) => ip.addr().to_string(),
            Node::WithPort(ip, port) => SocketAddr::new(ip.addr(), *port).to_string(),
            Node::Bracketed(ip) => format!("[{}]", ip.addr()),
            Node::Unknown => "unknown".to_owned(),
            Node::Obfuscated(s) => format!("_{s}"),
            Node::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Header {
    Raw(Vec<u8>),
    Nodes(Vec<(Node, u8)>),
}

impl Header {
    fn value(&self) -> http::HeaderValue {
        match self {
            Header::Raw(bytes) => common::header_value(bytes),
            Header::Nodes(nodes) => {
                let text = nodes
                    .iter()
                    .take(40)
                    .map(|(node, sep)| format!("{}{}", node.text(), [",", ", ", " ,", ",,"][usize::from(*sep % 4)]))
                    .collect::<String>();
                common::header_value(text.as_bytes())
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ForwardedHeader {
    Raw(Vec<u8>),
    Elements(Vec<Element>),
}

#[derive(Arbitrary, Debug)]
struct Element {
    pairs: Vec<(u8, Node, bool)>,
}

impl ForwardedHeader {
    fn value(&self) -> http::HeaderValue {
        match self {
            ForwardedHeader::Raw(bytes) => common::header_value(bytes),
            ForwardedHeader::Elements(elements) => {
                let text = elements
                    .iter()
                    .take(40)
                    .map(|e| {
                        e.pairs
                            .iter()
                            .take(5)
                            .map(|(name, node, quoted)| {
                                let name = ["for", "proto", "host", "by", "For", " for "][usize::from(*name % 6)];
                                let value = match (name.trim(), node) {
                                    ("proto", Node::Raw(s)) => s.clone(),
                                    ("proto", _) => "https".to_owned(),
                                    ("host", Node::Raw(s)) => s.clone(),
                                    ("host", n) => n.text(),
                                    (_, n) => n.text(),
                                };
                                if *quoted { format!("{name}=\"{value}\"") } else { format!("{name}={value}") }
                            })
                            .collect::<Vec<_>>()
                            .join(";")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                common::header_value(text.as_bytes())
            }
        }
    }
}

fn trust_of(trust: &Trust) -> TrustProxy {
    match trust {
        Trust::None => TrustProxy::None,
        Trust::All => TrustProxy::All,
        Trust::Hops(n) => TrustProxy::Hops(*n),
        Trust::SmallHops(n) => TrustProxy::Hops(usize::from(*n % 6)),
        Trust::Addresses(items) => {
            let items: Vec<&String> = items.iter().take(8).collect();
            TrustProxy::addresses(items).unwrap_or(TrustProxy::None)
        }
        Trust::Ranges(ranges) => {
            let items: Vec<String> = ranges
                .iter()
                .take(8)
                .filter_map(|(ip, prefix)| IpRange::new(ip.addr(), *prefix))
                .map(|r| r.to_string())
                .collect();
            // A range's display parses back to itself.
            for item in &items {
                let range: IpRange = item.parse().expect("a displayed range parses");
                assert_eq!(range.to_string(), *item);
            }
            TrustProxy::addresses(items).expect("displayed ranges parse")
        }
        Trust::Named(n) => {
            let names = ["loopback", "linklocal", "uniquelocal"];
            TrustProxy::addresses([names[usize::from(*n % 3)]]).expect("a known name")
        }
    }
}

/// What the helpers say.
#[derive(Debug, PartialEq, Eq)]
struct Facts {
    ip: Option<IpAddr>,
    ips: Vec<IpAddr>,
    protocol: &'static str,
    secure: bool,
    host: Option<String>,
    hostname: Option<String>,
    origin: Option<String>,
    href: Option<String>,
    subdomains: Vec<String>,
}

fn facts<R: RequestHeadExt + ?Sized>(r: &R, offset: usize) -> Facts {
    Facts {
        ip: r.ip(),
        ips: r.ips(),
        protocol: r.protocol(),
        secure: r.secure(),
        host: r.host(),
        hostname: r.hostname(),
        origin: r.origin(),
        href: r.href(),
        subdomains: r.subdomains(offset),
    }
}

fuzz_target!(|input: Input| {
    let trust = trust_of(&input.trust);
    let uri = input.uri.as_deref().and_then(|u| u.parse::<Uri>().ok()).unwrap_or_else(|| Uri::from_static("/"));
    let mut request = Request::get(uri.clone()).body(()).expect("a valid request");
    let headers = request.headers_mut();
    if let Some(host) = &input.host {
        headers.insert(http::header::HOST, common::header_value(host));
    }
    for h in input.xff.iter().take(3) {
        headers.append("x-forwarded-for", h.value());
    }
    for h in input.forwarded.iter().take(3) {
        headers.append(http::header::FORWARDED, h.value());
    }
    for h in input.xfp.iter().take(3) {
        headers.append("x-forwarded-proto", common::header_value(h));
    }
    for h in input.xfh.iter().take(3) {
        headers.append("x-forwarded-host", common::header_value(h));
    }
    let peer = input.peer.map(Ip::addr);
    if let Some(peer) = peer {
        let local = SocketAddr::from(([127, 0, 0, 1], 8080));
        request.extensions_mut().insert(Connection::new(SocketAddr::new(peer, input.peer_port), local));
    }
    let offset = usize::from(input.offset % 8);
    let layer = ContextLayer::new().trust_proxy(trust.clone());

    let done = common::run(&layer, request, move |req, ctx| async move {
        let got = facts(&ctx, offset);
        assert_eq!(got, facts(&req, offset), "context and request");
        let (req_parts, ()) = req.into_parts();
        assert_eq!(got, facts(&req_parts, offset), "context and parts");

        let canonical = peer.map(|p| p.to_canonical());
        let uri_https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let believes_nothing = match &trust {
            TrustProxy::None => true,
            TrustProxy::Addresses(_) => canonical.is_none_or(|p| !trust.trusts(p)),
            TrustProxy::Hops(0) => true,
            _ => false,
        };
        if believes_nothing {
            assert_eq!(got.ip, canonical, "nothing believed: the peer is the client");
            assert!(got.ips.is_empty(), "nothing believed: no ips");
            assert_eq!(got.protocol, if uri_https { "https" } else { "http" });
        }
        assert!(got.ips.len() <= 32, "{} ips", got.ips.len());
        if got.ip.is_some() && got.ip != canonical {
            assert_eq!(got.ips.first(), got.ip.as_ref(), "the client comes first in ips");
        }
        assert!(got.protocol == "http" || got.protocol == "https");
        assert_eq!(got.secure, got.protocol == "https");
        match (&got.host, &got.hostname) {
            (Some(host), Some(name)) => assert!(host.starts_with(name.as_str()), "{host:?} / {name:?}"),
            (None, None) => {}
            other => panic!("host and hostname disagree: {other:?}"),
        }
        assert_eq!(got.origin.is_some(), got.host.is_some());
        if uri.scheme().is_none() || uri.authority().is_none() {
            assert_eq!(got.href.is_some(), got.host.is_some());
        }
        // The jar follows the same belief about TLS.
        let _ = ctx.cookies().get("x");
        common::ok()
    });
    common::assert_clean_headers(&done.head);
});
