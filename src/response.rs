//! Response helpers.

use http::header::{self, HeaderMap, HeaderValue};

/// Adds `field` to the `Vary` header: merged with what is there, no duplicates
/// (case-insensitive), and `*` replaces everything.
///
/// ```
/// use tower_context::response::vary;
/// use http::HeaderMap;
///
/// let mut headers = HeaderMap::new();
/// vary(&mut headers, "Accept");
/// vary(&mut headers, "origin");
/// vary(&mut headers, "accept");
/// assert_eq!(headers["vary"], "Accept, origin");
/// vary(&mut headers, "*");
/// assert_eq!(headers["vary"], "*");
/// ```
pub fn vary(headers: &mut HeaderMap, field: &str) {
    let field = field.trim();
    if field.is_empty() {
        return;
    }
    let mut fields: Vec<&str> = Vec::new();
    let existing: Vec<HeaderValue> = headers.get_all(header::VARY).iter().cloned().collect();
    for value in &existing {
        // A value that is not visible ASCII is not a list of field names: dropped.
        let Ok(value) = value.to_str() else { continue };
        fields.extend(value.split(',').map(str::trim).filter(|f| !f.is_empty()));
    }
    if fields.contains(&"*") {
        headers.insert(header::VARY, HeaderValue::from_static("*"));
        return;
    }
    if field == "*" {
        headers.insert(header::VARY, HeaderValue::from_static("*"));
        return;
    }
    for new in field.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        if !fields.iter().any(|f| f.eq_ignore_ascii_case(new)) {
            fields.push(new);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&fields.join(", ")) {
        headers.insert(header::VARY, value);
    }
}
