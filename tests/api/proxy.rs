//! Client facts behind proxies: `TrustProxy` decides which forwarded headers count.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use tower::{Layer, ServiceExt, service_fn};
use tower_context::request::RequestHeadExt;
use tower_context::{Connection, Context, ContextLayer, TrustProxy};

const SPOOF: &[(&str, &str)] = &[
    ("host", "app.example"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.example"),
    ("forwarded", "for=7.7.7.7;proto=https;host=evil2.example"),
];

/// What the context says about the client, as JSON.
async fn facts(trust: TrustProxy, peer: Option<&str>, headers: &[(&str, &str)]) -> serde_json::Value {
    let svc =
        ContextLayer::new().trust_proxy(trust).layer(service_fn(|req: Request<Empty<Bytes>>| async move {
            let ctx = req.extensions().get::<Context>().cloned().expect("a context");
            let facts = serde_json::json!({
                "ip": ctx.ip().map(|ip| ip.to_string()),
                "ips": ctx.ips().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "protocol": ctx.protocol(),
                "secure": ctx.secure(),
                "host": ctx.host(),
                "href": ctx.href(),
                // The same facts read from the request itself.
                "request_ip": req.ip().map(|ip| ip.to_string()),
                "request_host": req.host(),
            });
            let set = ctx.cookies().set(("sid", "1"));
            let body = serde_json::json!({ "facts": facts, "cookie_ok": set.is_ok() }).to_string();
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(body))))
        }));
    let mut builder = Request::get("/p?x=1");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(Empty::new()).unwrap();
    if let Some(peer) = peer {
        let remote: SocketAddr = peer.parse().unwrap();
        req.extensions_mut().insert(Connection::new(remote, "127.0.0.1:8080".parse().unwrap()));
    }
    let res = svc.oneshot(req).await.unwrap();
    let cookie = res.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    json["facts"]["set_cookie"] = serde_json::json!(cookie);
    json["facts"].take()
}

#[tokio::test]
async fn spoofed_headers_from_an_untrusted_peer_are_ignored() {
    let expected = serde_json::json!({
        "ip": "203.0.113.9",
        "ips": [],
        "protocol": "http",
        "secure": false,
        "host": "app.example",
        "href": "http://app.example/p?x=1",
        "request_ip": "203.0.113.9",
        "request_host": "app.example",
        "set_cookie": "sid=1; HttpOnly; Path=/",
    });
    // The default trusts nobody.
    assert_eq!(facts(TrustProxy::None, Some("203.0.113.9:4000"), SPOOF).await, expected);
    // A list trusts only its members.
    let list = TrustProxy::addresses(["10.0.0.0/8", "loopback"]).unwrap();
    assert_eq!(facts(list.clone(), Some("203.0.113.9:4000"), SPOOF).await, expected);
    // An unknown peer is not on any list.
    let got = facts(list, None, SPOOF).await;
    assert_eq!(got["ip"], serde_json::Value::Null);
    assert_eq!(got["host"], "app.example");
    assert_eq!(got["protocol"], "http");
}

#[tokio::test]
async fn a_trusted_proxy_is_believed() {
    let list = TrustProxy::addresses(["10.0.0.0/8"]).unwrap();
    let headers = [
        ("host", "internal:8080"),
        ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.3"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example"),
    ];
    let got = facts(list, Some("10.0.0.2:5000"), &headers).await;
    assert_eq!(
        got,
        serde_json::json!({
            "ip": "198.51.100.7",
            "ips": ["198.51.100.7", "10.0.0.3"],
            "protocol": "https",
            "secure": true,
            "host": "shop.example",
            "href": "https://shop.example/p?x=1",
            "request_ip": "198.51.100.7",
            "request_host": "shop.example",
            // Secure by default, because a trusted proxy says the client used https.
            "set_cookie": "sid=1; HttpOnly; Secure; Path=/",
        })
    );
}

#[tokio::test]
async fn hop_counts_and_trust_all() {
    let headers = [("x-forwarded-for", "6.6.6.6, 198.51.100.7"), ("x-forwarded-proto", "http, https")];
    let got = facts(TrustProxy::Hops(1), None, &headers).await;
    assert_eq!(got["ip"], "198.51.100.7");
    assert_eq!(got["ips"], serde_json::json!(["198.51.100.7"]));
    assert_eq!(got["protocol"], "https");
    let got = facts(TrustProxy::All, Some("10.0.0.1:1"), &headers).await;
    assert_eq!(got["ip"], "6.6.6.6");
    assert_eq!(got["ips"], serde_json::json!(["6.6.6.6", "198.51.100.7"]));
    assert_eq!(got["protocol"], "http");
    // Without forwarded headers the peer is the client.
    let got = facts(TrustProxy::Hops(1), Some("[2001:db8::5]:443"), &[]).await;
    assert_eq!(got["ip"], "2001:db8::5");
    assert_eq!(got["ips"], serde_json::json!([]));
}

#[tokio::test]
async fn the_forwarded_header() {
    let headers = [
        ("host", "internal"),
        ("forwarded", r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https;host="api.example:8443""#),
    ];
    let got = facts(TrustProxy::Hops(1), Some("10.0.0.1:9"), &headers).await;
    assert_eq!(got["ip"], "2001:db8:cafe::17");
    assert_eq!(got["protocol"], "https");
    assert_eq!(got["host"], "api.example:8443");
    assert_eq!(got["href"], "https://api.example:8443/p?x=1");
}

#[tokio::test]
async fn garbage_from_a_trusted_proxy_is_ignored() {
    let headers = [
        ("host", "app.example"),
        ("x-forwarded-for", "unknown"),
        ("x-forwarded-proto", "javascript"),
        ("x-forwarded-host", "a b, user@x"),
    ];
    let got = facts(TrustProxy::All, Some("10.0.0.1:9"), &headers).await;
    assert_eq!(got["ip"], serde_json::Value::Null);
    assert_eq!(got["protocol"], "http");
    assert_eq!(got["host"], "app.example");
}

#[test]
fn trust_proxy_rejects_bad_ranges() {
    assert!(TrustProxy::addresses(["10.0.0.0/8", "fd00::/8", "::1", "192.168.1.1"]).is_ok());
    for bad in ["10.0.0.0/33", "10.0.0", "example.com", "::/200"] {
        let err = TrustProxy::addresses([bad]).unwrap_err();
        assert!(err.to_string().contains(bad));
    }
}
