//! Cookies through the layer: the jar, Set-Cookie on every path, defaults, keys and
//! rotation, the Keygrip format against vectors from the Node reference, private
//! cookies, bad input, and the ecosystem (axum extractors, axum-extra, tower-http).
//!
//! # Keygrip test vectors
//!
//! Node's `keygrip` signs `data` (the string `name=value`) as
//! `base64(HMAC_alg(key, data))` with `/` → `_`, `+` → `-` and `=` removed; `cookies`
//! sends it as `name.sig`. The vectors below were computed with Python's standard
//! library, the same algorithm written independently of this crate:
//!
//! ```text
//! python3 -c 'import hmac, hashlib, base64, sys
//! key, data, alg = sys.argv[1], sys.argv[2], getattr(hashlib, sys.argv[3])
//! sig = base64.b64encode(hmac.new(key.encode(), data.encode(), alg).digest()).decode()
//! print(sig.replace("/", "_").replace("+", "-").replace("=", ""))' "keyboard cat" "sid=abc123" sha1
//! ```
//!
//! and checked against the reference modules themselves (`npm install cookies@0.9.2
//! keygrip@1.1.0`), driving `new Cookies(req, res, { keys })` with a fake plain-http
//! request and response:
//!
//! ```text
//! set(sid, abc123, signed) and set(theme, "dark mode", signed), keys ["keyboard cat"]:
//!   sid=abc123; path=/; httponly
//!   sid.sig=bDPldTuO4L189k44cqUSZURruS8; path=/; httponly
//!   theme=dark mode; path=/; httponly
//!   theme.sig=kQIsRstWGKJ10DLyaWrgi1W8Ymw; path=/; httponly
//! the same with new Keygrip(["keyboard cat"], "sha256"):
//!   sid.sig=Dn_cVD-uC6jmvTZ1X_i-ehcPWa2TeXNUx7TdlF1z-a8; path=/; httponly
//! get(sid, signed), keys ["new secret", "old secret"], Cookie: sid=abc123; sid.sig=HgpzBDoHrpbYT1kZUjJAfZzINsA
//!   -> "abc123", and sid.sig=Qr2kZAYsHOfYPbZNr9Dk6B5XfaQ; path=/; httponly
//! the same keys, Cookie: sid=abc124; sid.sig=Qr2kZAYsHOfYPbZNr9Dk6B5XfaQ
//!   -> undefined, and sid.sig=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly
//! Cookie: sid=abc123 (no .sig) -> undefined, nothing set
//! get(a), Cookie: a=1; a=2 -> "1"
//! ```
//!
//! Our lines differ from Koa's only in attribute spelling and order (`HttpOnly; Path=/`)
//! and in adding `Max-Age=0` to removals; browsers read both the same.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_context::cookies::{Cookie, Cookies, KeygripHash, Keys, SameSite, SignedFormat, time};
use tower_context::{Context, ContextLayer, Ended, HttpError, throw};

use crate::common::body_string;

/// `key` | `data` | algorithm → signature (see the module docs for how).
const KEYBOARD_CAT_SID_SHA1: &str = "bDPldTuO4L189k44cqUSZURruS8"; // "keyboard cat" | "sid=abc123" | sha1
const KEYBOARD_CAT_SID_SHA256: &str = "Dn_cVD-uC6jmvTZ1X_i-ehcPWa2TeXNUx7TdlF1z-a8"; // … | sha256
const KEYBOARD_CAT_THEME_SHA1: &str = "kQIsRstWGKJ10DLyaWrgi1W8Ymw"; // "keyboard cat" | "theme=dark mode" | sha1
const OLD_SID_SHA1: &str = "HgpzBDoHrpbYT1kZUjJAfZzINsA"; // "old secret" | "sid=abc123" | sha1
const NEW_SID_SHA1: &str = "Qr2kZAYsHOfYPbZNr9Dk6B5XfaQ"; // "new secret" | "sid=abc123" | sha1
const NEW_USER_SHA256: &str = "TBUpgC2XXCV3bxCwgrA9chhGrQc5QT1-2jW4kcKtjvo"; // "new secret" | "user=ann" | sha256

const GONE: &str = "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";

fn request(uri: &str, cookie: Option<&[u8]>) -> Request<axum::body::Body> {
    let mut builder = Request::get(uri);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, HeaderValue::from_bytes(cookie).unwrap());
    }
    builder.body(axum::body::Body::empty()).unwrap()
}

/// A request that came over TLS, as a TLS-terminating server marks it.
fn over_tls(uri: &str) -> Request<axum::body::Body> {
    let mut request = request(uri, None);
    request.extensions_mut().insert(tower_context::connection::Tls);
    request
}

fn set_cookies<B>(response: &Response<B>) -> Vec<String> {
    response.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// One route at `/` under `layer`; the response and its Set-Cookie lines.
async fn call<H, T>(
    layer: ContextLayer,
    handler: H,
    req: Request<axum::body::Body>,
) -> (Response<String>, Vec<String>)
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let app = Router::new().route("/", get(handler)).layer(layer);
    let response = app.oneshot(req).await.unwrap();
    let lines = set_cookies(&response);
    let (parts, body) = response.into_parts();
    let body = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (Response::from_parts(parts, body), lines)
}

// 1. The jar on ctx.cookies(), and Set-Cookie on every path.

#[tokio::test]
async fn get_set_remove_and_iterate() {
    async fn handler(ctx: Context) -> Result<String, HttpError> {
        let cookies = ctx.cookies();
        let before = cookies.get("a").unwrap_or_default();
        cookies.set(("a", "2"))?;
        cookies.set(("new", "x"))?;
        cookies.remove("b")?;
        let all: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        Ok(format!("before {before}, after {}, all {}", cookies.get("a").unwrap_or_default(), all.join(" ")))
    }
    let (response, lines) = call(ContextLayer::new(), handler, request("/", Some(b"a=1; b=2; c=3"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "before 1, after 2, all a=2 c=3 new=x");
    assert_eq!(
        lines,
        [
            "a=2; HttpOnly; Path=/".to_owned(),
            "new=x; HttpOnly; Path=/".to_owned(),
            format!("b=; HttpOnly; Path=/; {GONE}")
        ]
    );
}

#[tokio::test]
async fn untouched_jar_sends_nothing() {
    async fn handler(_ctx: Context) -> &'static str {
        "plain"
    }
    let (response, lines) = call(ContextLayer::new(), handler, request("/", Some(b"a=1; \xff; ;;"))).await;
    assert_eq!(response.body(), "plain");
    assert!(lines.is_empty());
}

#[tokio::test]
async fn the_same_name_twice_sends_the_last() {
    async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set(("a", "1"))?;
        ctx.cookies().set(Cookie::build(("a", "2")).path("/x"))?;
        Ok("ok")
    }
    let (_, lines) = call(ContextLayer::new(), handler, request("/", None)).await;
    assert_eq!(lines, ["a=2; HttpOnly; Path=/x"]);
}

#[tokio::test]
async fn set_cookie_on_the_end_path() {
    async fn handler(ctx: Context) -> Result<Ended, HttpError> {
        ctx.cookies().set(("ended", "yes"))?;
        Ok(ctx.end(Response::new(String::from("short answer"))))
    }
    let (response, lines) = call(ContextLayer::new(), handler, request("/", None)).await;
    assert_eq!(response.body(), "short answer");
    assert_eq!(lines, ["ended=yes; HttpOnly; Path=/"]);
}

#[tokio::test]
async fn set_cookie_on_the_error_path() {
    async fn thrown(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set(("seen", "1"))?;
        throw!(403, "not you");
    }
    let (response, lines) = call(ContextLayer::new(), thrown, request("/", None)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(lines, ["seen=1; HttpOnly; Path=/"]);

    async fn returned(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().remove("session")?;
        Err(HttpError::new(401))
    }
    let (response, lines) = call(ContextLayer::new(), returned, request("/", Some(b"session=x"))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(lines, [format!("session=; HttpOnly; Path=/; {GONE}")]);
}

#[tokio::test]
async fn set_cookie_from_a_tower_service_that_fails() {
    let service = ServiceBuilder::new().layer(ContextLayer::new()).service(service_fn(
        |req: Request<Empty<Bytes>>| async move {
            let ctx = req.extensions().get::<Context>().cloned().unwrap();
            ctx.cookies().set(("tower", "1"))?;
            Err::<Response<Full<Bytes>>, HttpError>(HttpError::new(418))
        },
    ));
    let response = service.oneshot(Request::get("/").body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(set_cookies(&response), ["tower=1; HttpOnly; Path=/"]);
}

#[tokio::test]
async fn set_cookie_from_an_after_hook() {
    async fn handler(ctx: Context) -> &'static str {
        let cookies = ctx.cookies().clone();
        ctx.after(move |response| async move {
            cookies.set(("hooked", "1"))?;
            Ok(response)
        })
        .unwrap();
        "hooked"
    }
    let (response, lines) = call(ContextLayer::new(), handler, request("/", None)).await;
    assert_eq!(response.body(), "hooked");
    assert_eq!(lines, ["hooked=1; HttpOnly; Path=/"]);
}

#[tokio::test]
async fn set_cookie_from_a_spawned_task() {
    async fn handler(ctx: Context) -> &'static str {
        let (done, wait) = tokio::sync::oneshot::channel();
        let task_ctx = ctx.clone();
        ctx.spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            task_ctx.cookies().set(("from_task", "1"))?;
            let _ = done.send(());
            Ok::<(), HttpError>(())
        });
        let _ = wait.await;
        "spawned"
    }
    let (response, lines) = call(ContextLayer::new(), handler, request("/", None)).await;
    assert_eq!(response.body(), "spawned");
    assert_eq!(lines, ["from_task=1; HttpOnly; Path=/"]);
}

#[tokio::test]
async fn set_cookie_from_an_inner_layer() {
    async fn mark(req: Request<axum::body::Body>, next: axum::middleware::Next) -> axum::response::Response {
        let ctx = req.extensions().get::<Context>().cloned().unwrap();
        let _ = ctx.cookies().set(("layer", "1"));
        next.run(req).await
    }
    async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set(("handler", "1"))?;
        Ok("ok")
    }
    let app = Router::new()
        .route("/", get(handler))
        .layer(axum::middleware::from_fn(mark))
        .layer(ContextLayer::new());
    let response = app.oneshot(request("/", None)).await.unwrap();
    assert_eq!(set_cookies(&response), ["layer=1; HttpOnly; Path=/", "handler=1; HttpOnly; Path=/"]);
}

// 2. Defaults and attributes.

#[tokio::test]
async fn secure_follows_the_request() {
    async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set(("a", "1"))?;
        Ok("ok")
    }
    let (_, lines) = call(ContextLayer::new(), handler, over_tls("https://example.com/")).await;
    assert_eq!(lines, ["a=1; HttpOnly; Secure; Path=/"]);
    let (_, lines) = call(ContextLayer::new(), handler, request("http://example.com/", None)).await;
    assert_eq!(lines, ["a=1; HttpOnly; Path=/"]);
    // What the client wrote in the request line is not the transport.
    let (_, lines) = call(ContextLayer::new(), handler, request("https://example.com/", None)).await;
    assert_eq!(lines, ["a=1; HttpOnly; Path=/"]);
}

#[tokio::test]
async fn secure_believes_a_trusted_proxy_only() {
    async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set(("a", "1"))?;
        Ok("ok")
    }
    let forwarded =
        || Request::get("/").header("x-forwarded-proto", "https").body(axum::body::Body::empty()).unwrap();
    let trusting = ContextLayer::new().trust_proxy(tower_context::TrustProxy::All);
    let (_, lines) = call(trusting, handler, forwarded()).await;
    assert_eq!(lines, ["a=1; HttpOnly; Secure; Path=/"]);
    let (_, lines) = call(ContextLayer::new(), handler, forwarded()).await;
    assert_eq!(lines, ["a=1; HttpOnly; Path=/"]);
}

#[tokio::test]
async fn a_secure_cookie_over_http_is_refused_unless_allowed() {
    async fn handler(ctx: Context) -> String {
        match ctx.cookies().set(Cookie::build(("a", "1")).secure(true)) {
            Ok(()) => "set".into(),
            Err(err) => err.to_string(),
        }
    }
    let (response, lines) = call(ContextLayer::new(), handler, request("/", None)).await;
    assert_eq!(response.body(), "cannot send secure cookie \"a\" over unencrypted connection");
    assert!(lines.is_empty());

    let layer = ContextLayer::new().allow_secure_cookies_over_http(true);
    let (response, lines) = call(layer, handler, request("/", None)).await;
    assert_eq!(response.body(), "set");
    assert_eq!(lines, ["a=1; HttpOnly; Secure; Path=/"]);

    // Through `?`, the refusal is a 500 that does not show its message.
    async fn strict(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set(Cookie::build(("a", "1")).secure(true))?;
        Ok("unreachable")
    }
    let (response, lines) = call(ContextLayer::new(), strict, request("/", None)).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!response.body().contains("secure cookie"));
    assert!(lines.is_empty());
}

#[tokio::test]
async fn same_site_max_age_expires_domain() {
    async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
        let expires = time::OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
        ctx.cookies().set(
            Cookie::build(("prefs", "compact"))
                .same_site(SameSite::Strict)
                .max_age(time::Duration::days(7))
                .expires(expires)
                .domain("example.com"),
        )?;
        ctx.cookies().set(Cookie::build(("cross", "1")).same_site(SameSite::None))?;
        ctx.cookies().remove(Cookie::build("old").path("/app").domain("example.com"))?;
        Ok("ok")
    }
    let (_, lines) = call(ContextLayer::new(), handler, over_tls("https://example.com/")).await;
    assert_eq!(
        lines,
        [
            "prefs=compact; HttpOnly; SameSite=Strict; Secure; Path=/; Domain=example.com; Max-Age=604800; \
             Expires=Thu, 01 Jan 2026 00:00:00 GMT"
                .to_owned(),
            "cross=1; HttpOnly; SameSite=None; Secure; Path=/".to_owned(),
            format!("old=; HttpOnly; Secure; Path=/app; Domain=example.com; {GONE}"),
        ]
    );
}

/// A removal keeps the attributes a browser keys or filters the cookie by: a
/// partitioned cookie is deleted only by a partitioned removal, a cross-site one
/// only by one sent cross-site (`SameSite=None`), and a `Secure` one set over plain
/// HTTP (allowed by the layer) only by a removal marked `Secure` too.
#[tokio::test]
async fn a_removal_keeps_same_site_partitioned_and_secure_as_given() {
    async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().remove_signed(Cookie::build("embed").same_site(SameSite::None).partitioned(true))?;
        ctx.cookies().remove(Cookie::build("__Host-sid").secure(true))?;
        ctx.cookies().remove(Cookie::build("lax").same_site(SameSite::Lax))?;
        Ok("ok")
    }
    let (_, lines) = call(ContextLayer::new(), handler, over_tls("https://example.com/")).await;
    assert_eq!(
        lines,
        [
            format!("embed=; HttpOnly; SameSite=None; Partitioned; Secure; Path=/; {GONE}"),
            format!("embed.sig=; HttpOnly; SameSite=None; Partitioned; Secure; Path=/; {GONE}"),
            format!("__Host-sid=; HttpOnly; Secure; Path=/; {GONE}"),
            format!("lax=; HttpOnly; SameSite=Lax; Secure; Path=/; {GONE}"),
        ]
    );
    let layer = ContextLayer::new().allow_secure_cookies_over_http(true);
    let (_, lines) = call(layer, handler, request("/", None)).await;
    assert_eq!(lines[2], format!("__Host-sid=; HttpOnly; Secure; Path=/; {GONE}"));
    assert_eq!(lines[3], format!("lax=; HttpOnly; SameSite=Lax; Path=/; {GONE}"));
}

// 3. Keys and rotation, in the cookie crate's format.

async fn remember(ctx: Context) -> Result<String, HttpError> {
    let seen = ctx.cookies().get_signed("sid")?;
    if seen.is_none() {
        ctx.cookies().set_signed(("sid", "abc123"))?;
    }
    Ok(seen.unwrap_or_else(|| "none".into()))
}

fn value_of(line: &str) -> &str {
    line.split(';').next().unwrap().split_once('=').unwrap().1
}

#[tokio::test]
async fn keys_rotate_without_logging_anyone_out() {
    let old = ContextLayer::new().keys(Keys::new(["old secret"])).signed_format(SignedFormat::Cookie);
    let (response, lines) = call(old.clone(), remember, request("/", None)).await;
    assert_eq!(response.body(), "none");
    let signed = value_of(&lines[0]).to_owned();
    assert!(signed.ends_with("abc123") && signed.len() == 44 + 6, "{signed}");

    // The old key still verifies.
    let header = format!("sid={signed}");
    let (response, lines) = call(old, remember, request("/", Some(header.as_bytes()))).await;
    assert_eq!(response.body(), "abc123");
    assert!(lines.is_empty());

    // A new key goes first: the cookie still reads, and is re-signed with the new key.
    let rotated =
        ContextLayer::new().keys(Keys::new(["new secret", "old secret"])).signed_format(SignedFormat::Cookie);
    let (response, lines) = call(rotated, remember, request("/", Some(header.as_bytes()))).await;
    assert_eq!(response.body(), "abc123");
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with("; HttpOnly; Path=/"));
    let resigned = value_of(&lines[0]).to_owned();
    assert_ne!(resigned, signed);

    // Once the old key is dropped, the re-signed cookie is what keeps the user in.
    let new = ContextLayer::new().keys(Keys::new(["new secret"])).signed_format(SignedFormat::Cookie);
    let (response, _) =
        call(new.clone(), remember, request("/", Some(format!("sid={resigned}").as_bytes()))).await;
    assert_eq!(response.body(), "abc123");
    let (response, _) = call(new, remember, request("/", Some(header.as_bytes()))).await;
    assert_eq!(response.body(), "none");
}

#[tokio::test]
async fn generated_keys_sign_and_verify() {
    let layer = ContextLayer::new().keys(Keys::generate()).signed_format(SignedFormat::Cookie);
    let (_, lines) = call(layer.clone(), remember, request("/", None)).await;
    let header = format!("sid={}", value_of(&lines[0]));
    let (response, _) = call(layer, remember, request("/", Some(header.as_bytes()))).await;
    assert_eq!(response.body(), "abc123");
    let (response, _) = call(
        ContextLayer::new().keys(Keys::generate()).signed_format(SignedFormat::Cookie),
        remember,
        request("/", Some(header.as_bytes())),
    )
    .await;
    assert_eq!(response.body(), "none");
}

#[tokio::test]
async fn signed_cookies_without_keys_are_a_clear_error() {
    async fn handler(ctx: Context) -> String {
        let cookies = ctx.cookies();
        let errors = [
            cookies.set_signed(("sid", "1")).err(),
            cookies.get_signed("sid").err(),
            cookies.get_private("sid").err(),
            cookies.get_signed("never_sent").err(),
        ];
        errors.map(|e| e.map(|e| e.to_string()).unwrap_or_else(|| "no error".into())).join("\n")
    }
    let message = "signed and private cookies need keys: ContextLayer::new().keys(Keys::new([..]))";
    let (response, lines) = call(ContextLayer::new(), handler, request("/", Some(b"sid=1; sid.sig=x"))).await;
    assert_eq!(response.body(), &[message; 4].join("\n"));
    assert!(lines.is_empty());

    // Through `?`, reading without keys is a 500 that does not show its message, not
    // a visitor who seems logged out.
    let (response, lines) =
        call(ContextLayer::new(), read_sid, request("/", Some(b"sid=1; sid.sig=x"))).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!response.body().contains("keys"));
    assert!(lines.is_empty());
    let (response, _) = call(ContextLayer::new(), read_sid, request("/", None)).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let (response, _) = call(ContextLayer::new().keys(Keys::new([""])), read_sid, request("/", None)).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    // With keys, a missing or forged cookie is still just absent.
    let layer = keygrip(&["keyboard cat"], KeygripHash::Sha1);
    let (response, _) = call(layer.clone(), read_sid, request("/", None)).await;
    assert_eq!((response.status(), response.body().as_str()), (StatusCode::OK, "absent"));
    let (response, _) = call(layer, read_sid, request("/", Some(b"sid=1; sid.sig=forged"))).await;
    assert_eq!((response.status(), response.body().as_str()), (StatusCode::OK, "absent"));
}

// 4. Keygrip, against the reference vectors.

fn keygrip(keys: &[&str], hash: KeygripHash) -> ContextLayer {
    ContextLayer::new().keys(Keys::new(keys)).signed_format(SignedFormat::Keygrip(hash))
}

#[tokio::test]
async fn keygrip_writes_what_koa_writes() {
    async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set_signed(("sid", "abc123"))?;
        ctx.cookies().set_signed(("theme", "dark mode"))?;
        Ok("ok")
    }
    let (_, lines) = call(keygrip(&["keyboard cat"], KeygripHash::Sha1), handler, request("/", None)).await;
    assert_eq!(
        lines,
        [
            "sid=abc123; HttpOnly; Path=/".to_owned(),
            format!("sid.sig={KEYBOARD_CAT_SID_SHA1}; HttpOnly; Path=/"),
            "theme=dark mode; HttpOnly; Path=/".to_owned(),
            format!("theme.sig={KEYBOARD_CAT_THEME_SHA1}; HttpOnly; Path=/"),
        ]
    );
    let (_, lines) = call(keygrip(&["keyboard cat"], KeygripHash::Sha256), handler, request("/", None)).await;
    assert_eq!(lines[1], format!("sid.sig={KEYBOARD_CAT_SID_SHA256}; HttpOnly; Path=/"));
}

async fn read_sid(ctx: Context) -> Result<String, HttpError> {
    Ok(ctx.cookies().get_signed("sid")?.unwrap_or_else(|| "absent".into()))
}

#[tokio::test]
async fn keygrip_reads_what_koa_writes() {
    let header = format!("sid=abc123; sid.sig={KEYBOARD_CAT_SID_SHA1}");
    let (response, lines) = call(
        ContextLayer::new().keys(Keys::new(["keyboard cat"])).signed_format(SignedFormat::KEYGRIP),
        read_sid,
        request("/", Some(header.as_bytes())),
    )
    .await;
    assert_eq!(response.body(), "abc123");
    assert!(lines.is_empty());

    async fn read_user(ctx: Context) -> Result<String, HttpError> {
        Ok(ctx.cookies().get_signed("user")?.unwrap_or_else(|| "absent".into()))
    }
    let header = format!("user=ann; user.sig={NEW_USER_SHA256}");
    let (response, _) =
        call(keygrip(&["new secret"], KeygripHash::Sha256), read_user, request("/", Some(header.as_bytes())))
            .await;
    assert_eq!(response.body(), "ann");
    // The same signature under SHA-1 is a different one: not verified.
    let (response, _) =
        call(keygrip(&["new secret"], KeygripHash::Sha1), read_user, request("/", Some(header.as_bytes())))
            .await;
    assert_eq!(response.body(), "absent");
}

#[tokio::test]
async fn keygrip_re_signs_an_old_key_with_the_newest() {
    let header = format!("sid=abc123; sid.sig={OLD_SID_SHA1}");
    let layer = keygrip(&["new secret", "old secret"], KeygripHash::Sha1);
    let (response, lines) = call(layer, read_sid, request("/", Some(header.as_bytes()))).await;
    assert_eq!(response.body(), "abc123");
    assert_eq!(lines, [format!("sid.sig={NEW_SID_SHA1}; HttpOnly; Path=/")]);
}

async fn logout(ctx: Context) -> Result<&'static str, HttpError> {
    ctx.cookies().remove_signed("sid")?;
    Ok("bye")
}

#[tokio::test]
async fn removing_a_signed_cookie_removes_its_signature_as_koa_does() {
    let both = [format!("sid=; HttpOnly; Path=/; {GONE}"), format!("sid.sig=; HttpOnly; Path=/; {GONE}")];
    let layer = keygrip(&["keyboard cat"], KeygripHash::Sha1);
    let signed = format!("sid=abc123; sid.sig={KEYBOARD_CAT_SID_SHA1}");
    // Whatever the browser sent: both cookies, the value alone, or nothing.
    for header in [Some(signed.as_bytes()), Some(b"sid=abc123".as_slice()), None] {
        let (response, lines) = call(layer.clone(), logout, request("/", header)).await;
        assert_eq!(response.body(), "bye");
        assert_eq!(lines, both, "{header:?}");
    }
    // Deleting needs no secret: it works on a layer without keys too.
    let (_, lines) = call(ContextLayer::new(), logout, request("/", Some(b"sid=abc123"))).await;
    assert_eq!(lines, both);

    // In the cookie crate's format the signature is inside the value: one cookie.
    let layer = ContextLayer::new().keys(Keys::new(["k"])).signed_format(SignedFormat::Cookie);
    let (_, lines) = call(layer, logout, request("/", Some(b"sid=abc123"))).await;
    assert_eq!(lines, [format!("sid=; HttpOnly; Path=/; {GONE}")]);
}

#[tokio::test]
async fn an_empty_path_sends_no_path_attribute() {
    async fn handler(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set(Cookie::build(("here", "1")).path(""))?;
        ctx.cookies().set_signed(Cookie::build(("sid", "abc123")).path(""))?;
        ctx.cookies().remove(Cookie::build("old").path(""))?;
        ctx.cookies().remove_signed(Cookie::build("user").path(""))?;
        Ok("ok")
    }
    let (_, lines) = call(keygrip(&["keyboard cat"], KeygripHash::Sha1), handler, request("/", None)).await;
    assert_eq!(
        lines,
        [
            "here=1; HttpOnly".to_owned(),
            "sid=abc123; HttpOnly".to_owned(),
            format!("sid.sig={KEYBOARD_CAT_SID_SHA1}; HttpOnly"),
            format!("old=; HttpOnly; {GONE}"),
            format!("user=; HttpOnly; {GONE}"),
            format!("user.sig=; HttpOnly; {GONE}"),
        ]
    );
}

// 5. Private cookies.

#[tokio::test]
async fn private_cookies_are_hidden_and_rotate() {
    async fn handler(ctx: Context) -> Result<String, HttpError> {
        let seen = ctx.cookies().get_private("session")?;
        if seen.is_none() {
            ctx.cookies()
                .set_private(Cookie::build(("session", "user=42; role=admin")).same_site(SameSite::Lax))?;
        }
        Ok(seen.unwrap_or_else(|| "none".into()))
    }
    let old = ContextLayer::new().keys(Keys::new(["old secret"])).signed_format(SignedFormat::Cookie);
    let (_, lines) = call(old, handler, request("/", None)).await;
    assert!(!lines[0].contains("admin"));
    assert!(lines[0].ends_with("; HttpOnly; SameSite=Lax; Path=/"));
    let header = format!("session={}", value_of(&lines[0]));

    let rotated =
        ContextLayer::new().keys(Keys::new(["new secret", "old secret"])).signed_format(SignedFormat::Cookie);
    let (response, lines) = call(rotated, handler, request("/", Some(header.as_bytes()))).await;
    assert_eq!(response.body(), "user=42; role=admin");
    assert_eq!(lines.len(), 1);
    let resealed = format!("session={}", value_of(&lines[0]));

    let new = ContextLayer::new().keys(Keys::new(["new secret"])).signed_format(SignedFormat::Cookie);
    let (response, _) = call(new.clone(), handler, request("/", Some(resealed.as_bytes()))).await;
    assert_eq!(response.body(), "user=42; role=admin");
    let (response, _) = call(new, handler, request("/", Some(header.as_bytes()))).await;
    assert_eq!(response.body(), "none");
}

// 6. Bad input.

#[tokio::test]
async fn bad_cookie_headers_never_panic() {
    async fn handler(ctx: Context) -> String {
        let cookies = ctx.cookies();
        let all: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!((cookies.get_signed("a"), cookies.get_private("a")), (Ok(None), Ok(None)));
        format!(
            "a={:?} n={} all={}",
            cookies.get("a"),
            all.len(),
            all.iter().take(4).cloned().collect::<Vec<_>>().join(",")
        )
    }
    let cases: [(&[u8], &str); 6] = [
        (b";;; =; ==; a", "a=None n=0 all="),
        (b"a=1; a=2; a=3", "a=Some(\"1\") n=1 all=a=1"),
        (b"x=\xff\xfe; a=ok; y=\xc3\xa9", "a=Some(\"ok\") n=2 all=a=ok,y=\u{e9}"),
        (b"a=\"quoted\"", "a=Some(\"\\\"quoted\\\"\") n=1 all=a=\"quoted\""),
        (b"   ", "a=None n=0 all="),
        (b"a=1;b=2 ;c = 3", "a=Some(\"1\") n=3 all=a=1,b=2,c=3"),
    ];
    for (header, expected) in cases {
        let (response, lines) = call(
            ContextLayer::new().keys(Keys::new(["k"])).signed_format(SignedFormat::Cookie),
            handler,
            request("/", Some(header)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{header:?}");
        assert_eq!(response.body(), expected, "{header:?}");
        assert!(lines.is_empty(), "{header:?}");
    }
}

#[tokio::test]
async fn a_64_kib_cookie_header() {
    let mut header = Vec::new();
    let mut i = 0;
    while header.len() < 64 * 1024 {
        header.extend_from_slice(format!("name{i}=value{i}; ").as_bytes());
        i += 1;
    }
    header.extend_from_slice(b"a=last");
    async fn handler(ctx: Context) -> String {
        let (all, last) = (ctx.cookies().iter().len(), ctx.cookies().get("a"));
        format!("{all} {last:?} truncated={}", ctx.cookies().truncated())
    }
    // A layer that reads that many pairs reads them all.
    let layer = ContextLayer::new().max_cookie_pairs(10_000);
    let (response, _) = call(layer, handler, request("/", Some(&header))).await;
    assert_eq!(response.body(), &format!("{} Some(\"last\") truncated=false", i + 1));
    // By default it reads 256, and says the rest were left.
    let (response, _) = call(ContextLayer::new(), handler, request("/", Some(&header))).await;
    assert_eq!(response.body(), "256 None truncated=true");
}

#[tokio::test]
async fn a_wrong_missing_or_unknown_signature_reads_as_absent() {
    let cleared = format!("sid.sig=; HttpOnly; Path=/; {GONE}");
    let layer = keygrip(&["new secret", "old secret"], KeygripHash::Sha1);
    let cases = [
        // Wrong: a signature of another value.
        (format!("sid=abc124; sid.sig={NEW_SID_SHA1}"), vec![cleared.clone()]),
        // Garbage.
        ("sid=abc123; sid.sig=%%%".to_owned(), vec![cleared.clone()]),
        // From a key this app does not have.
        (format!("sid=abc123; sid.sig={KEYBOARD_CAT_SID_SHA1}"), vec![cleared.clone()]),
        // Missing: absent, and nothing to clear.
        ("sid=abc123".to_owned(), vec![]),
        ("sid=abc123; sid.sig=".to_owned(), vec![cleared]),
    ];
    for (header, expected) in cases {
        let (response, lines) = call(layer.clone(), read_sid, request("/", Some(header.as_bytes()))).await;
        assert_eq!(response.body(), "absent", "{header}");
        assert_eq!(lines, expected, "{header}");
    }
}

#[tokio::test]
async fn values_that_would_inject_are_refused() {
    async fn handler(ctx: Context) -> String {
        let attempts = [
            ctx.cookies().set(("a", "1; Domain=evil.example")),
            ctx.cookies().set(("a", "1\r\nSet-Cookie: admin=1")),
            ctx.cookies().set(("a;b", "1")),
            ctx.cookies().set(Cookie::build(("a", "1")).path("/; Secure")),
            ctx.cookies().set_signed(("a", "1\n")),
        ];
        attempts
            .iter()
            .map(|r| r.as_ref().map_err(ToString::to_string).err().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
    let (response, lines) = call(
        ContextLayer::new().keys(Keys::new(["k"])).signed_format(SignedFormat::Cookie),
        handler,
        request("/", None),
    )
    .await;
    assert_eq!(
        response.body(),
        "invalid value for cookie \"a\": no control characters, ';', non-ASCII bytes or surrounding spaces \
         (percent-encode the value)\n\
         invalid value for cookie \"a\": no control characters, ';', non-ASCII bytes or surrounding spaces \
         (percent-encode the value)\n\
         invalid cookie name \"a;b\": use letters, digits and !#$%&'*+-.^_`|~\n\
         invalid Path for cookie \"a\": no control characters or ';'\n\
         invalid value for cookie \"a\": no control characters, ';', non-ASCII bytes or surrounding spaces \
         (percent-encode the value)"
    );
    assert!(lines.is_empty());
}

// 7. The ecosystem.

#[tokio::test]
async fn the_cookies_extractor() {
    async fn handler(cookies: Cookies) -> Result<String, HttpError> {
        cookies.set(("via", "extractor"))?;
        Ok(cookies.get("a").unwrap_or_default())
    }
    let (response, lines) = call(ContextLayer::new(), handler, request("/", Some(b"a=1"))).await;
    assert_eq!(response.body(), "1");
    assert_eq!(lines, ["via=extractor; HttpOnly; Path=/"]);

    // Without the layer: a 500, not a panic.
    let app = Router::new().route("/", get(handler));
    let response = app.oneshot(request("/", None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn reads_and_writes_axum_extras_signed_jar_and_the_cookie_crates_private_jar() {
    use axum::response::IntoResponse;
    use axum_extra::extract::cookie::{Key, SignedCookieJar};

    let key = Key::generate();
    // axum-extra percent-encodes what it writes: base64's `/` and `=` arrive as %2F, %3D.
    let theirs = SignedCookieJar::new(key.clone()).add(Cookie::new("sid", "abc/123=")).into_response();
    let mut pairs: Vec<String> =
        set_cookies(&theirs).iter().map(|line| line.split(';').next().unwrap().to_owned()).collect();
    let mut private = cookie::CookieJar::new();
    private.private_mut(&key).add(("secret", "s3cr3t"));
    pairs.extend(private.delta().map(|c| c.encoded().to_string()));
    let header = pairs.join("; ");

    async fn handler(ctx: Context) -> Result<String, HttpError> {
        let cookies = ctx.cookies();
        let read = format!("{:?} {:?}", cookies.get_signed("sid")?, cookies.get_private("secret")?);
        cookies.set_signed(("mine", "from rust"))?;
        cookies.set_private(("hidden", "x"))?;
        Ok(read)
    }
    let layer =
        ContextLayer::new().keys(Keys::from_cookie_keys([key.clone()])).signed_format(SignedFormat::Cookie);
    let (response, lines) = call(layer, handler, request("/", Some(header.as_bytes()))).await;
    assert_eq!(response.body(), "Some(\"abc/123=\") Some(\"s3cr3t\")");

    // And axum-extra (which percent-decodes) reads what this jar wrote.
    let ours =
        lines.iter().map(|line| line.split(';').next().unwrap().to_owned()).collect::<Vec<_>>().join("; ");
    let mut headers = http::HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_str(&ours).unwrap());
    let signed = SignedCookieJar::from_headers(&headers, key.clone());
    assert_eq!(signed.get("mine").map(|c| c.value().to_owned()).as_deref(), Some("from rust"));
    let mut private = cookie::CookieJar::new();
    for pair in cookie::Cookie::split_parse_encoded(ours) {
        private.add_original(pair.unwrap().into_owned());
    }
    assert_eq!(private.private(&key).get("hidden").map(|c| c.value().to_owned()).as_deref(), Some("x"));
}

#[tokio::test]
async fn beside_tower_http_layers() {
    use tower_http::cors::CorsLayer;
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    use tower_http::set_header::SetResponseHeaderLayer;

    async fn handler(ctx: Context) -> Result<String, HttpError> {
        ctx.cookies().set(("id", ctx.id().to_owned()))?;
        if ctx.uri().path() == "/fail" {
            throw!(409, "conflict");
        }
        Ok(ctx.id().to_owned())
    }
    let app = Router::new().route("/", get(handler)).route("/fail", get(handler)).layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(ContextLayer::new())
            // Inside the context layer: the error rendering keeps their headers.
            .layer(CorsLayer::permissive())
            .layer(SetResponseHeaderLayer::overriding(header::SERVER, HeaderValue::from_static("test"))),
    );
    for (path, status) in [("/", StatusCode::OK), ("/fail", StatusCode::CONFLICT)] {
        let req = Request::get(path)
            .header(header::ORIGIN, "https://example.org")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), status);
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(set_cookies(&response), [format!("id={id}; HttpOnly; Path=/")]);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        assert_eq!(response.headers()[header::SERVER], "test");
        if status == StatusCode::OK {
            assert_eq!(body_string(response).await, id);
        }
    }
}

#[tokio::test]
async fn a_plain_service_fn_with_no_cookie_use_is_untouched() {
    let service = ServiceBuilder::new().layer(ContextLayer::new()).service(service_fn(
        |_req: Request<Empty<Bytes>>| async { Ok::<_, Infallible>(Response::new(Full::from("x"))) },
    ));
    let req = Request::get("/").header(header::COOKIE, "a=1").body(Empty::new()).unwrap();
    let response = service.oneshot(req).await.unwrap();
    assert!(set_cookies(&response).is_empty());
    assert_eq!(body_string(response).await, "x");
}

/// Replaying a signed value under another cookie name must not verify (the default,
/// Keygrip, signs `name=value`); private cookies bind the name too. The cookie
/// crate's format signs only the value, as documented on `SignedFormat::Cookie`.
#[tokio::test]
async fn signatures_are_bound_to_the_cookie_name() {
    async fn sign(ctx: Context) -> Result<&'static str, HttpError> {
        ctx.cookies().set_signed(Cookie::new("user", "ann"))?;
        ctx.cookies().set_private(Cookie::new("secret", "ann"))?;
        Ok("set")
    }
    async fn read(ctx: Context) -> Result<String, HttpError> {
        Ok(format!("{:?} {:?}", ctx.cookies().get_signed("role")?, ctx.cookies().get_private("other")?))
    }
    let layer = || ContextLayer::new().keys(Keys::new(["k1"]));
    let (_, lines) = call(layer(), sign, request("/", None)).await;
    let value_of = |name: &str| {
        let prefix = format!("{name}=");
        lines
            .iter()
            .find_map(|c| c.split(';').next()?.strip_prefix(prefix.as_str()).map(str::to_owned))
            .unwrap()
    };
    let (user, sig, secret) = (value_of("user"), value_of("user.sig"), value_of("secret"));

    // Sent back under their own names, they verify...
    let honest = format!("user={user}; user.sig={sig}; secret={secret}");
    async fn read_own(ctx: Context) -> Result<String, HttpError> {
        Ok(format!("{:?} {:?}", ctx.cookies().get_signed("user")?, ctx.cookies().get_private("secret")?))
    }
    let (response, _) = call(layer(), read_own, request("/", Some(honest.as_bytes()))).await;
    assert_eq!(response.body(), r#"Some("ann") Some("ann")"#);

    // ...under other names, they do not.
    let replay = format!("role={user}; role.sig={sig}; other={secret}");
    let (response, _) = call(layer(), read, request("/", Some(replay.as_bytes()))).await;
    assert_eq!(response.body(), "None None");
}
