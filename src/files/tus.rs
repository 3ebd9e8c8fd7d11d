//! The tus 1.0 protocol's header grammar and the download headers, as pure
//! functions: `Upload-Metadata`, `Upload-Checksum`, `Range`, file ids,
//! content types and dispositions.
//!
//! Owns: parsing and formatting only (unit-tested here, fuzzable).
//! Must never: touch the disk, the store or a socket.

use base64::Engine;
use sha1::Digest as _;

/// The protocol version this server speaks (`Tus-Resumable`, `Tus-Version`).
pub const VERSION: &str = "1.0.0";
/// `Tus-Extension`: what `OPTIONS` advertises.
pub const EXTENSIONS: &str = "creation,creation-with-upload,expiration,checksum,termination";
/// `Tus-Checksum-Algorithm`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
/// The content type of a PATCH body (and of a creation-with-upload body).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Status for a chunk whose `Upload-Checksum` does not match (tus checksum extension).
pub const CHECKSUM_MISMATCH: u16 = 460;

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs (the value
/// may be absent). Keys are unique and carry no spaces or commas.
pub fn parse_metadata(header: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
    for item in header.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let mut parts = item.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().unwrap_or_default();
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("Upload-Metadata key {key:?} must be printable ASCII without spaces"));
        }
        let value = match parts.next() {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| format!("Upload-Metadata value of {key:?} is not base64"))?,
            None => Vec::new(),
        };
        if parts.next().is_some() {
            return Err(format!("Upload-Metadata item {item:?} has more than a key and a value"));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(format!("Upload-Metadata key {key:?} appears twice"));
        }
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

/// A metadata value as text (lossy: names are shown, never trusted).
pub fn metadata_text(pairs: &[(String, Vec<u8>)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The whole file's sha256 a client claims in `Upload-Metadata` (`sha256`:
/// base64 of the 32-byte digest, or 64 hex digits), as lowercase hex.
pub fn claimed_sha256(pairs: &[(String, Vec<u8>)]) -> Result<Option<String>, String> {
    let Some((_, value)) = pairs.iter().find(|(k, _)| k == "sha256") else { return Ok(None) };
    if value.len() == 32 {
        return Ok(Some(hex(value)));
    }
    let text = String::from_utf8_lossy(value);
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        if bytes.len() == 32 {
            return Ok(Some(hex(&bytes)));
        }
    }
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Some(text.to_ascii_lowercase()));
    }
    Err("Upload-Metadata sha256 must be the file's SHA-256 digest (base64 of 32 bytes, or 64 hex digits)".into())
}

/// Digest algorithms of `Upload-Checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
}

/// A running digest of a chunk.
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// `Upload-Checksum: ALGORITHM BASE64(DIGEST)`. Unsupported algorithms are
/// an error naming the supported ones (the tus spec says 400).
pub fn parse_checksum(header: &str) -> Result<(Algorithm, Vec<u8>), String> {
    let (name, encoded) = header.trim().split_once(' ').ok_or("Upload-Checksum must be \"ALGORITHM BASE64\"")?;
    let algorithm = match name.to_ascii_lowercase().as_str() {
        "sha1" => Algorithm::Sha1,
        "sha256" => Algorithm::Sha256,
        other => return Err(format!("Upload-Checksum algorithm {other:?} is not supported: use sha1 or sha256")),
    };
    let digest = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "Upload-Checksum digest is not base64".to_string())?;
    let expected_len = match algorithm {
        Algorithm::Sha1 => 20,
        Algorithm::Sha256 => 32,
    };
    if digest.len() != expected_len {
        return Err(format!("Upload-Checksum {name} digest must be {expected_len} bytes"));
    }
    Ok((algorithm, digest))
}

/// What a `Range` header asks of a file of `length` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// No (usable) range: the whole file, 200.
    Whole,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// A range that lies past the end: 416.
    Unsatisfiable,
}

/// One `bytes=` range (`a-b`, `a-`, `-n`). Several ranges, other units or
/// malformed values are served whole, as RFC 9110 allows.
pub fn parse_range(header: Option<&str>, length: u64) -> Range {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Range::Whole };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Range::Whole };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // The last n bytes.
        let Ok(n) = last.parse::<u64>() else { return Range::Whole };
        if n == 0 || length == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Part { start: length.saturating_sub(n), end: length - 1 };
    }
    let Ok(start) = first.parse::<u64>() else { return Range::Whole };
    if start >= length {
        return Range::Unsatisfiable;
    }
    let end = if last.is_empty() {
        length - 1
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end.min(length - 1),
            _ => return Range::Whole,
        }
    };
    Range::Part { start, end }
}

/// A new file id: 128 random bits from the operating system's generator,
/// as 32 lowercase hex digits. Unguessable, so a link is a capability.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    hex(&bytes)
}

/// Whether `id` has the shape [`new_id`] gives (checked before any lookup).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The content type a download is served with: the uploader's `filetype`
/// when it is a well-formed `type/subtype`, else `application/octet-stream`.
pub fn safe_content_type(declared: Option<&str>) -> String {
    let Some(declared) = declared.map(str::trim) else { return "application/octet-stream".into() };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b));
    match declared.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) && declared.len() <= 100 => declared.to_ascii_lowercase(),
        _ => "application/octet-stream".into(),
    }
}

/// Whether a browser may show this type in place (pictures, sound, video):
/// anything else is served as an attachment, so an uploaded page or script
/// never runs on the broker's origin.
pub fn shown_inline(content_type: &str) -> bool {
    matches!(content_type, "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif")
        || content_type.starts_with("audio/")
        || content_type.starts_with("video/")
}

/// `Content-Disposition` (RFC 6266): an ASCII fallback name and the exact
/// name percent-encoded as UTF-8.
pub fn content_disposition(name: Option<&str>, inline: bool) -> String {
    let kind = if inline { "inline" } else { "attachment" };
    let Some(name) = name.filter(|n| !n.is_empty()) else { return kind.to_string() };
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .take(100)
        .collect();
    let mut encoded = String::new();
    for b in name.bytes().take(400) {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// An HTTP date (`Upload-Expires`, `Last-Modified`).
pub fn http_date(unix_ms: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_with_and_without_values() {
        let pairs =
            parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, filetype aW1hZ2UvcG5n")
                .unwrap();
        assert_eq!(metadata_text(&pairs, "filename").as_deref(), Some("world_domination_plan.pdf"));
        assert_eq!(metadata_text(&pairs, "is_confidential").as_deref(), Some(""));
        assert_eq!(metadata_text(&pairs, "filetype").as_deref(), Some("image/png"));
        assert!(parse_metadata("a x!,").unwrap_err().contains("base64"));
        assert!(parse_metadata("a YQ==,a YQ==").unwrap_err().contains("twice"));
        assert!(parse_metadata("").unwrap().is_empty());
    }

    #[test]
    fn claimed_sha256_in_base64_or_hex() {
        let digest = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let pairs = vec![("sha256".to_string(), b64.into_bytes())];
        assert_eq!(claimed_sha256(&pairs).unwrap(), Some(hex(&digest)));
        let pairs = vec![("sha256".to_string(), hex(&digest).to_uppercase().into_bytes())];
        assert_eq!(claimed_sha256(&pairs).unwrap(), Some(hex(&digest)));
        assert!(claimed_sha256(&[("sha256".to_string(), b"short".to_vec())]).is_err());
        assert_eq!(claimed_sha256(&[]).unwrap(), None);
    }

    #[test]
    fn checksum_header() {
        let mut h = Hasher::new(Algorithm::Sha1);
        h.update(b"hello");
        let digest = h.finish();
        let header = format!("sha1 {}", base64::engine::general_purpose::STANDARD.encode(&digest));
        assert_eq!(parse_checksum(&header).unwrap(), (Algorithm::Sha1, digest));
        assert!(parse_checksum("md5 AAAA").unwrap_err().contains("sha1 or sha256"));
        assert!(parse_checksum("sha256 AAAA").unwrap_err().contains("32 bytes"));
        assert!(parse_checksum("sha256").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Range::Whole);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Range::Part { start: 0, end: 4 });
        assert_eq!(parse_range(Some("bytes=5-"), 10), Range::Part { start: 5, end: 9 });
        assert_eq!(parse_range(Some("bytes=-3"), 10), Range::Part { start: 7, end: 9 });
        assert_eq!(parse_range(Some("bytes=-30"), 10), Range::Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Range::Part { start: 8, end: 9 });
        assert_eq!(parse_range(Some("bytes=10-"), 10), Range::Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Range::Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Range::Whole);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Range::Whole);
    }

    #[test]
    fn ids_are_128_bit_hex() {
        let a = new_id();
        assert!(valid_id(&a), "{a}");
        assert_ne!(a, new_id());
        assert!(!valid_id("../etc/passwd"));
        assert!(!valid_id(&a.to_uppercase()));
    }

    #[test]
    fn content_types_and_dispositions() {
        assert_eq!(safe_content_type(Some("image/PNG")), "image/png");
        assert_eq!(safe_content_type(Some("text/html\r\nX: y")), "application/octet-stream");
        assert_eq!(safe_content_type(None), "application/octet-stream");
        assert!(shown_inline("image/png") && !shown_inline("text/html") && !shown_inline("image/svg+xml"));
        assert_eq!(
            content_disposition(Some("ünï \"x\".png"), true),
            "inline; filename=\"_n_ _x_.png\"; filename*=UTF-8''%C3%BCn%C3%AF%20%22x%22.png"
        );
        assert_eq!(content_disposition(None, false), "attachment");
    }
}
