use super::*;

fn config(keys: Option<Keys>, format: SignedFormat) -> CookieConfig {
    CookieConfig { keys, format, ..CookieConfig::default() }
}

fn jar(header: &str, config: &CookieConfig, secure: bool) -> Cookies {
    let header = (!header.is_empty()).then(|| HeaderValue::from_str(header).unwrap());
    Cookies::new(header, config, secure)
}

fn set_cookies(cookies: &Cookies) -> Vec<String> {
    let mut headers = HeaderMap::new();
    cookies.write(&mut headers);
    headers.get_all(http::header::SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

/// What `get_signed` and `get_private` return for a cookie that verified.
fn some(value: &str) -> Result<Option<String>, CookieError> {
    Ok(Some(value.to_owned()))
}

const GONE: &str = "Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT";

#[test]
fn handles_are_send_sync_and_share_one_jar() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cookies>();
    let cookies = jar("", &CookieConfig::default(), false);
    let clone = cookies.clone();
    clone.set(("a", "1")).unwrap();
    assert_eq!(cookies.get("a").as_deref(), Some("1"));
}

#[test]
fn defaults_follow_the_request() {
    let plain = jar("", &CookieConfig::default(), false);
    plain.set(("a", "1")).unwrap();
    assert_eq!(set_cookies(&plain), ["a=1; HttpOnly; Path=/"]);

    let tls = jar("", &CookieConfig::default(), true);
    tls.set(("a", "1")).unwrap();
    tls.set(Cookie::build(("b", "2")).http_only(false).path("/app").secure(false)).unwrap();
    assert_eq!(set_cookies(&tls), ["a=1; HttpOnly; Secure; Path=/", "b=2; Path=/app"]);
}

#[test]
fn secure_on_http_is_refused_unless_allowed() {
    let plain = jar("", &CookieConfig::default(), false);
    let err = plain.set(Cookie::build(("a", "1")).secure(true)).unwrap_err();
    assert_eq!(err, CookieError::SecureOverHttp { name: "a".into() });
    assert_eq!(err.to_string(), "cannot send secure cookie \"a\" over unencrypted connection");
    // SameSite=None needs Secure, so it is refused the same way.
    assert!(plain.set(Cookie::build(("b", "1")).same_site(SameSite::None)).is_err());
    assert!(set_cookies(&plain).is_empty());

    let allowed = CookieConfig { secure_over_http: true, ..CookieConfig::default() };
    let plain = jar("", &allowed, false);
    plain.set(Cookie::build(("b", "1")).same_site(SameSite::None)).unwrap();
    assert_eq!(set_cookies(&plain), ["b=1; HttpOnly; SameSite=None; Secure; Path=/"]);
}

#[test]
fn every_attribute_is_written() {
    let tls = jar("", &CookieConfig::default(), true);
    let expires = time::OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
    tls.set(
        Cookie::build(("a", "1"))
            .same_site(SameSite::Lax)
            .domain("example.com")
            .max_age(time::Duration::seconds(60))
            .expires(expires),
    )
    .unwrap();
    assert_eq!(
        set_cookies(&tls),
        ["a=1; HttpOnly; SameSite=Lax; Secure; Path=/; Domain=example.com; Max-Age=60; \
          Expires=Thu, 01 Jan 2026 00:00:00 GMT"]
    );
}

#[test]
fn the_last_set_of_a_name_wins() {
    let cookies = jar("a=0", &CookieConfig::default(), false);
    cookies.set(("a", "1")).unwrap();
    cookies.set(("b", "x")).unwrap();
    cookies.set(("a", "2")).unwrap();
    assert_eq!(cookies.get("a").as_deref(), Some("2"));
    assert_eq!(set_cookies(&cookies), ["a=2; HttpOnly; Path=/", "b=x; HttpOnly; Path=/"]);
}

#[test]
fn remove_keeps_path_and_domain() {
    let cookies = jar("a=1; b=2", &CookieConfig::default(), false);
    cookies.remove("a").unwrap();
    cookies.remove(Cookie::build("b").path("/app").domain("example.com")).unwrap();
    assert_eq!(cookies.get("a"), None);
    assert_eq!(
        set_cookies(&cookies),
        [
            format!("a=; HttpOnly; Path=/; {GONE}"),
            format!("b=; HttpOnly; Path=/app; Domain=example.com; {GONE}")
        ]
    );
    assert_eq!(cookies.iter().count(), 0);
}

#[test]
fn invalid_cookies_are_errors_and_send_nothing() {
    let cookies = jar("", &CookieConfig::default(), false);
    assert!(matches!(cookies.set(("a", "1; Domain=evil.com")), Err(CookieError::InvalidValue { .. })));
    assert!(matches!(cookies.set(("a", "1\r\nX-Evil: 1")), Err(CookieError::InvalidValue { .. })));
    assert!(matches!(cookies.set(("a b", "1")), Err(CookieError::InvalidName { .. })));
    assert!(matches!(
        cookies.set(Cookie::build(("a", "1")).path("/\n")),
        Err(CookieError::InvalidAttribute { attribute: "Path", .. })
    ));
    assert!(cookies.remove("a;b").is_err());
    assert!(set_cookies(&cookies).is_empty());
}

#[test]
fn without_keys_signed_and_private_are_refused() {
    let cookies = jar("a=1; a.sig=x", &CookieConfig::default(), false);
    assert_eq!(cookies.set_signed(("a", "1")), Err(CookieError::NoKeys));
    assert_eq!(cookies.set_private(("a", "1")), Err(CookieError::NoKeys));
    assert_eq!(cookies.get_signed("a"), Err(CookieError::NoKeys));
    assert_eq!(cookies.get_private("a"), Err(CookieError::NoKeys));
    // An absent cookie too: otherwise every logged-out request hides the mistake.
    assert_eq!(cookies.get_signed("absent"), Err(CookieError::NoKeys));
    assert_eq!(cookies.get_private("absent"), Err(CookieError::NoKeys));
    // Failing to read clears nothing: the `a.sig` the client holds is left alone.
    assert!(set_cookies(&cookies).is_empty());

    for format in [SignedFormat::KEYGRIP, SignedFormat::Cookie] {
        let empty = config(Some(Keys::new([""])), format);
        let cookies = jar("a=1; a.sig=x", &empty, false);
        assert_eq!(cookies.set_signed(("a", "1")), Err(CookieError::NoKeys));
        assert_eq!(cookies.get_signed("a"), Err(CookieError::NoKeys));
        assert_eq!(cookies.get_private("a"), Err(CookieError::NoKeys));
    }
}

#[test]
fn with_keys_a_missing_or_bad_cookie_is_none_not_an_error() {
    let keygrip = config(Some(Keys::new(["keyboard cat"])), SignedFormat::KEYGRIP);
    let cookies = jar("sid=abc123; sid.sig=forged; box=junk", &keygrip, false);
    assert_eq!(cookies.get_signed("absent"), Ok(None));
    assert_eq!(cookies.get_signed("sid"), Ok(None));
    assert_eq!(cookies.get_private("absent"), Ok(None));
    assert_eq!(cookies.get_private("box"), Ok(None));
}

#[test]
fn cookie_format_signs_verifies_and_rotates() {
    let old = config(Some(Keys::new(["old"])), SignedFormat::Cookie);
    let first = jar("", &old, false);
    first.set_signed(("sid", "abc")).unwrap();
    assert_eq!(first.get_signed("sid"), some("abc"));
    let signed = first.get("sid").unwrap();
    assert_eq!(signed.len(), 44 + 3);
    assert!(signed.ends_with("abc"));

    // The same keys read it back; a new key first re-signs it.
    let rotated = config(Some(Keys::new(["new", "old"])), SignedFormat::Cookie);
    let second = jar(&format!("sid={signed}"), &rotated, false);
    assert_eq!(second.get_signed("sid"), some("abc"));
    let lines = set_cookies(&second);
    assert_eq!(lines.len(), 1);
    let resigned = lines[0].strip_prefix("sid=").unwrap().split(';').next().unwrap().to_owned();
    assert_ne!(resigned, signed);
    let third =
        jar(&format!("sid={resigned}"), &config(Some(Keys::new(["new"])), SignedFormat::Cookie), false);
    assert_eq!(third.get_signed("sid"), some("abc"));
    assert!(set_cookies(&third).is_empty());

    // Tampering, or a key nobody has, reads as absent.
    let tampered = signed.replace("abc", "abd");
    assert_eq!(jar(&format!("sid={tampered}"), &old, false).get_signed("sid"), Ok(None));
    let stranger = config(Some(Keys::new(["stranger"])), SignedFormat::Cookie);
    assert_eq!(jar(&format!("sid={signed}"), &stranger, false).get_signed("sid"), Ok(None));
    assert_eq!(jar("sid=abc", &old, false).get_signed("sid"), Ok(None));
}

#[test]
fn cookie_format_reads_the_cookie_crates_own_jar() {
    let key = cookie::Key::generate();
    let mut theirs = CookieJar::new();
    theirs.signed_mut(&key).add(("sid", "abc"));
    theirs.private_mut(&key).add(("secret", "x y; z"));
    let header = theirs.iter().map(|c| format!("{}={}", c.name(), c.value())).collect::<Vec<_>>().join("; ");
    let ours = config(Some(Keys::from_cookie_keys([key])), SignedFormat::Cookie);
    let cookies = jar(&header, &ours, false);
    assert_eq!(cookies.get_signed("sid"), some("abc"));
    assert_eq!(cookies.get_private("secret"), some("x y; z"));
}

// Keygrip vectors: HMAC-SHA1 of "sid=abc123", base64url without padding (see
// tests/api/cookies.rs for how they were computed).
const SIG_KEYBOARD_CAT: &str = "bDPldTuO4L189k44cqUSZURruS8";
const SIG_OLD: &str = "HgpzBDoHrpbYT1kZUjJAfZzINsA";
const SIG_NEW: &str = "Qr2kZAYsHOfYPbZNr9Dk6B5XfaQ";

#[test]
fn keygrip_writes_a_companion_signature() {
    let keygrip = config(Some(Keys::new(["keyboard cat"])), SignedFormat::KEYGRIP);
    let cookies = jar("", &keygrip, false);
    cookies.set_signed(Cookie::build(("sid", "abc123")).path("/app")).unwrap();
    assert_eq!(
        set_cookies(&cookies),
        [
            "sid=abc123; HttpOnly; Path=/app".to_owned(),
            format!("sid.sig={SIG_KEYBOARD_CAT}; HttpOnly; Path=/app")
        ]
    );
    assert_eq!(cookies.get_signed("sid"), some("abc123"));
}

#[test]
fn keygrip_verifies_rotates_and_clears() {
    let keys = config(Some(Keys::new(["new secret", "old secret"])), SignedFormat::KEYGRIP);

    let current = jar(&format!("sid=abc123; sid.sig={SIG_NEW}"), &keys, false);
    assert_eq!(current.get_signed("sid"), some("abc123"));
    assert!(set_cookies(&current).is_empty());

    let older = jar(&format!("sid=abc123; sid.sig={SIG_OLD}"), &keys, false);
    assert_eq!(older.get_signed("sid"), some("abc123"));
    assert_eq!(set_cookies(&older), [format!("sid.sig={SIG_NEW}; HttpOnly; Path=/")]);

    for bad in [
        "sid=abc124; sid.sig=",
        "sid=abc123; sid.sig=nope",
        &format!("sid=abc123; sid.sig={SIG_KEYBOARD_CAT}"),
    ] {
        let wrong = jar(bad, &keys, false);
        assert_eq!(wrong.get_signed("sid"), Ok(None), "{bad}");
        assert_eq!(set_cookies(&wrong), [format!("sid.sig=; HttpOnly; Path=/; {GONE}")], "{bad}");
    }

    let missing = jar("sid=abc123", &keys, false);
    assert_eq!(missing.get_signed("sid"), Ok(None));
    assert!(set_cookies(&missing).is_empty());
}

#[test]
fn keygrip_remove_deletes_the_companion() {
    let keys = config(Some(Keys::new(["keyboard cat"])), SignedFormat::KEYGRIP);
    let cookies = jar(&format!("sid=abc123; sid.sig={SIG_KEYBOARD_CAT}; theme=dark"), &keys, false);
    cookies.remove("sid").unwrap();
    cookies.remove("theme").unwrap();
    assert_eq!(
        set_cookies(&cookies),
        [
            format!("sid=; HttpOnly; Path=/; {GONE}"),
            format!("sid.sig=; HttpOnly; Path=/; {GONE}"),
            format!("theme=; HttpOnly; Path=/; {GONE}")
        ]
    );
}

#[test]
fn keygrip_remove_signed_deletes_both_whether_or_not_the_sig_was_sent() {
    let keys = config(Some(Keys::new(["keyboard cat"])), SignedFormat::KEYGRIP);
    for header in ["sid=abc123", "", &format!("sid=abc123; sid.sig={SIG_KEYBOARD_CAT}")] {
        let cookies = jar(header, &keys, false);
        cookies.remove_signed("sid").unwrap();
        assert_eq!(
            set_cookies(&cookies),
            [format!("sid=; HttpOnly; Path=/; {GONE}"), format!("sid.sig=; HttpOnly; Path=/; {GONE}")],
            "{header}"
        );
        assert_eq!(cookies.get_signed("sid"), Ok(None), "{header}");
        assert_eq!(cookies.get("sid.sig"), None, "{header}");
    }
}

#[test]
fn remove_signed_keeps_path_and_domain_on_both() {
    let keys = config(Some(Keys::new(["keyboard cat"])), SignedFormat::KEYGRIP);
    let cookies = jar("", &keys, true);
    cookies.remove_signed(Cookie::build("sid").path("/app").domain("example.com")).unwrap();
    assert_eq!(
        set_cookies(&cookies),
        [
            format!("sid=; HttpOnly; Secure; Path=/app; Domain=example.com; {GONE}"),
            format!("sid.sig=; HttpOnly; Secure; Path=/app; Domain=example.com; {GONE}")
        ]
    );
}

#[test]
fn remove_signed_replaces_a_signed_set_and_a_rotation() {
    let keys = config(Some(Keys::new(["new secret", "old secret"])), SignedFormat::KEYGRIP);
    let cookies = jar(&format!("sid=abc123; sid.sig={SIG_OLD}"), &keys, false);
    // The read re-signs with the newest key, then the logout wins over it.
    assert_eq!(cookies.get_signed("sid"), some("abc123"));
    cookies.set_signed(("other", "1")).unwrap();
    cookies.remove_signed("sid").unwrap();
    cookies.remove_signed("other").unwrap();
    assert_eq!(
        set_cookies(&cookies),
        [
            format!("sid.sig=; HttpOnly; Path=/; {GONE}"),
            format!("other=; HttpOnly; Path=/; {GONE}"),
            format!("other.sig=; HttpOnly; Path=/; {GONE}"),
            format!("sid=; HttpOnly; Path=/; {GONE}"),
        ]
    );
}

#[test]
fn cookie_format_remove_signed_deletes_the_one_cookie() {
    let keys = config(Some(Keys::new(["k"])), SignedFormat::Cookie);
    let cookies = jar("sid=whatever; sid.sig=unrelated", &keys, false);
    cookies.remove_signed("sid").unwrap();
    assert_eq!(set_cookies(&cookies), [format!("sid=; HttpOnly; Path=/; {GONE}")]);
    assert_eq!(cookies.get("sid.sig").as_deref(), Some("unrelated"));
}

#[test]
fn remove_signed_needs_no_keys() {
    let cookies = jar("", &CookieConfig::default(), false);
    cookies.remove_signed("sid").unwrap();
    assert_eq!(
        set_cookies(&cookies),
        [format!("sid=; HttpOnly; Path=/; {GONE}"), format!("sid.sig=; HttpOnly; Path=/; {GONE}")]
    );
    assert!(matches!(
        jar("", &CookieConfig::default(), false).remove_signed("a b"),
        Err(CookieError::InvalidName { .. })
    ));
}

#[test]
fn an_empty_path_sends_no_path() {
    let cookies = jar("", &CookieConfig::default(), false);
    cookies.set(Cookie::build(("a", "1")).path("")).unwrap();
    cookies.remove(Cookie::build("b").path("")).unwrap();
    assert_eq!(set_cookies(&cookies), ["a=1; HttpOnly".to_owned(), format!("b=; HttpOnly; {GONE}")]);

    let keygrip = config(Some(Keys::new(["keyboard cat"])), SignedFormat::KEYGRIP);
    let cookies = jar("", &keygrip, false);
    cookies.set_signed(Cookie::build(("sid", "abc123")).path("")).unwrap();
    cookies.set_private(Cookie::build(("box", "x")).path("")).unwrap();
    assert_eq!(cookies.get_signed("sid"), some("abc123"));
    let lines = set_cookies(&cookies);
    assert_eq!(
        lines[..2],
        ["sid=abc123; HttpOnly".to_owned(), format!("sid.sig={SIG_KEYBOARD_CAT}; HttpOnly")]
    );
    assert!(lines[2].starts_with("box=") && lines[2].ends_with("; HttpOnly"), "{}", lines[2]);

    let cookies = jar("", &keygrip, false);
    cookies.remove_signed(Cookie::build("sid").path("")).unwrap();
    assert_eq!(
        set_cookies(&cookies),
        [format!("sid=; HttpOnly; {GONE}"), format!("sid.sig=; HttpOnly; {GONE}")]
    );
}

#[test]
fn an_empty_domain_sends_no_domain() {
    let cookies = jar("", &CookieConfig::default(), false);
    cookies.set(Cookie::build(("a", "1")).domain("")).unwrap();
    cookies.set(Cookie::build(("c", "3")).domain(".")).unwrap();
    cookies.remove(Cookie::build("b").domain("")).unwrap();
    assert_eq!(
        set_cookies(&cookies),
        [
            "a=1; HttpOnly; Path=/".to_owned(),
            "c=3; HttpOnly; Path=/".to_owned(),
            format!("b=; HttpOnly; Path=/; {GONE}")
        ]
    );
}

#[test]
fn private_cookies_hide_and_rotate() {
    let old = config(Some(Keys::new(["old"])), SignedFormat::Cookie);
    let first = jar("", &old, true);
    first.set_private(("session", "user=42; role=admin")).unwrap();
    let sealed = first.get("session").unwrap();
    assert!(!sealed.contains("admin"));
    assert_eq!(first.get_private("session"), some("user=42; role=admin"));
    assert!(set_cookies(&first)[0].ends_with("; HttpOnly; Secure; Path=/"));

    let rotated = config(Some(Keys::new(["new", "old"])), SignedFormat::Cookie);
    let second = jar(&format!("session={sealed}"), &rotated, true);
    assert_eq!(second.get_private("session"), some("user=42; role=admin"));
    let resealed = second.get("session").unwrap();
    assert_ne!(resealed, sealed);
    let third =
        jar(&format!("session={resealed}"), &config(Some(Keys::new(["new"])), SignedFormat::Cookie), true);
    assert_eq!(third.get_private("session"), some("user=42; role=admin"));

    let mut tampered = sealed.into_bytes();
    tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(jar(&format!("session={tampered}"), &old, true).get_private("session"), Ok(None));
    assert_eq!(jar("session=plain", &old, true).get_private("session"), Ok(None));
}

#[test]
fn iteration_shows_the_jar_as_get_reads_it() {
    let cookies = jar("a=1; b=2; a=3", &CookieConfig::default(), false);
    cookies.set(("c", "4")).unwrap();
    cookies.set(("b", "5")).unwrap();
    let all: Vec<_> = cookies.iter().collect();
    let expected = [("a", "1"), ("b", "5"), ("c", "4")].map(|(n, v)| (n.to_owned(), v.to_owned()));
    assert_eq!(all, expected);
    assert_eq!((&cookies).into_iter().len(), 3);
}
