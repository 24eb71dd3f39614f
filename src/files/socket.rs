//! The chat WebSocket's `file` event (features `files` and `ws`): the file's
//! content in the answer, as Actionhero sends it, except that a file that is not
//! text goes as base64. (Actionhero joins the file's chunks into a string, which
//! corrupts any byte that is not UTF-8.)

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::Request;
use http::header::CONTENT_TYPE;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::{Codings, NOT_FOUND, PublicFiles, send};
use crate::connection::Message;

/// Actionhero's text for a `file` event without a file.
const NO_FILE: &str = "file is a required param to send a file";

/// What a `file` event is answered with: on success `{"status": "OK", "context":
/// "response", "content", "encoding": "utf8" | "base64", "mime", "length",
/// "lastModified", "messageId"}`, else the usual error answer with `data`.
pub(crate) async fn answer(
    files: &PublicFiles,
    file: Option<&Value>,
    limit: u64,
    data: Value,
    id: Value,
) -> Message {
    match load(files, file, limit).await {
        Ok(loaded) => Message::ok_with_fields(
            &[
                ("content", &loaded.content),
                ("encoding", &Value::from(loaded.encoding)),
                ("mime", &Value::from(loaded.mime)),
                ("length", &Value::from(loaded.length)),
                ("lastModified", &loaded.last_modified),
            ],
            id,
        ),
        Err(error) => Message::error(&error, data, id),
    }
}

struct Loaded {
    content: Value,
    encoding: &'static str,
    mime: String,
    length: usize,
    last_modified: Value,
}

async fn load(files: &PublicFiles, file: Option<&Value>, limit: u64) -> Result<Loaded, String> {
    let Some(Value::String(path)) = file else { return Err(NO_FILE.to_owned()) };
    // The content goes out as it is stored, never a precompressed variant.
    let found =
        files.find(Path::new(path), Codings::default()).await.map_err(|err| err.message_str().to_owned())?;
    let found = found.ok_or_else(|| NOT_FOUND.to_owned())?;
    let len = found.meta.len();
    if len > limit {
        return Err(format!("that file is too large for this socket ({len} bytes; the limit is {limit})"));
    }
    let modified = found.meta.modified().ok();
    let response = send::serve(found, Request::new(()), Codings::default())
        .await
        .map_err(|err| err.message_str().to_owned())?;
    let mime = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let mime = mime.to_owned();
    // The file may have grown since it was measured: the limit holds for what is read.
    let body = Limited::new(response.into_body(), usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = body.collect().await.map_err(|_| "the file could not be read whole".to_owned())?.to_bytes();
    let length = bytes.len();
    let (content, encoding) = match std::str::from_utf8(&bytes) {
        Ok(text) if is_text(&mime) => (Value::from(text), "utf8"),
        _ => (Value::from(base64::engine::general_purpose::STANDARD.encode(&bytes)), "base64"),
    };
    let last_modified = modified.and_then(iso_8601).map_or(Value::Null, Value::from);
    Ok(Loaded { content, encoding, mime, length, last_modified })
}

/// A type whose content is text: `text/*`, JSON, JavaScript, XML and their `+json`,
/// `+xml` kin.
fn is_text(mime: &str) -> bool {
    let Ok(mime) = mime.parse::<mime::Mime>() else { return false };
    mime.type_() == mime::TEXT
        || mime.suffix().is_some_and(|s| s == mime::JSON || s == mime::XML)
        || (mime.type_() == mime::APPLICATION
            && [mime::JSON, mime::JAVASCRIPT, mime::XML].iter().any(|sub| mime.subtype() == *sub))
}

/// A time as JavaScript's `Date.toJSON` writes it (`2025-02-04T10:00:00.000Z`), which
/// is how Actionhero's `lastModified` arrives; `None` outside the years it can write.
fn iso_8601(time: SystemTime) -> Option<String> {
    let nanos = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).ok()?,
        Err(before) => -i128::try_from(before.duration().as_nanos()).ok()?,
    };
    let t = cookie::time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_are_written_as_javascript_writes_them() {
        let t = UNIX_EPOCH + Duration::from_millis(1_738_663_200_123);
        assert_eq!(iso_8601(t).as_deref(), Some("2025-02-04T10:00:00.123Z"));
        assert_eq!(iso_8601(UNIX_EPOCH).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            iso_8601(UNIX_EPOCH - Duration::from_secs(1)).as_deref(),
            Some("1969-12-31T23:59:59.000Z")
        );
        assert_eq!(iso_8601(UNIX_EPOCH + Duration::from_secs(400 * 365 * 86_400 * 100)), None);
    }

    #[test]
    fn text_types_are_told_from_the_rest() {
        for text in ["text/plain", "text/html; charset=utf-8", "application/json", "application/javascript"] {
            assert!(is_text(text), "{text}");
        }
        for text in ["application/ld+json", "image/svg+xml", "application/xml"] {
            assert!(is_text(text), "{text}");
        }
        for binary in ["image/png", "application/octet-stream", "application/pdf", "not a type"] {
            assert!(!is_text(binary), "{binary}");
        }
    }
}
