//! Small helpers shared by every module: a seeded PRNG (so fault injection and generated ids
//! are reproducible in tests), UUID v4 formatting, wall-clock formatting in the ISO 8601 form
//! Microsoft's APIs use, and base64url for opaque paging tokens.

use base64::Engine as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: tiny, fast and good enough for fault decisions and ids. Not cryptographic;
/// access tokens come from aws-lc-rs's system RNG instead.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random (version 4, variant 1) UUID in its usual lower-case hyphenated form.
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&b.to_be_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2024-05-01T12:34:56Z`, the form Graph uses for `createdDateTime`, `deletedDateTime` and
/// `innerError.date`.
pub fn iso8601(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix as i64);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Year, month, day, hour, minute, second of a Unix time (UTC).
fn civil(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one format.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m as u32,
        d as u32,
        (secs / 3600) as u32,
        ((secs / 60) % 60) as u32,
        (secs % 60) as u32,
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of [`civil`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days in a month of the proleptic Gregorian calendar.
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `2026-07-15T16:40:06.0000000Z`: how Exchange's REST answers show the `…UTC` date
/// properties (`WhenChangedUTC`, `WhenCreatedUTC`). Seconds only, like the directory's
/// `whenChanged`: the milliseconds are dropped, the seven fraction digits are zeros.
pub fn exchange_utc(ms: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil((ms / 1000) as i64);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.0000000Z")
}

/// `2021-10-21T12:49:09+00:00`: Exchange's local-time date properties (`WhenChanged`,
/// `WhenCreated`, `WhenSoftDeleted`) in the server's zone, which for the emulator is UTC.
pub fn exchange_local(ms: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil((ms / 1000) as i64);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}+00:00")
}

/// Unix seconds of a date the emulator itself rendered with [`exchange_utc`],
/// [`exchange_local`] or [`iso8601`] (`YYYY-MM-DDTHH:MM:SS`, an optional fraction, then `Z`
/// or `+00:00`).
pub fn parse_rendered_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        rest = &f[digits..];
    }
    if rest != "Z" && rest != "+00:00" {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

pub fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// Percent-encodes a value for use inside a query string.
pub fn query_escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// 32 random bytes from the system RNG, base64url: unguessable opaque tokens.
pub fn random_token() -> String {
    let mut buf = [0u8; 32];
    // The system RNG failing is not something a test emulator can recover from.
    aws_lc_rs::rand::fill(&mut buf).expect("system RNG");
    b64url(&buf)
}

/// Lower-cases an e-mail address for comparisons; Microsoft compares addresses
/// case-insensitively.
pub fn fold(s: &str) -> String {
    s.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn exchange_dates() {
        // 2023-11-14T22:13:20.999Z: the milliseconds are dropped, never rounded up.
        assert_eq!(
            exchange_utc(1_700_000_000_999),
            "2023-11-14T22:13:20.0000000Z"
        );
        assert_eq!(
            exchange_local(1_700_000_000_999),
            "2023-11-14T22:13:20+00:00"
        );
        for s in [
            "2023-11-14T22:13:20.0000000Z",
            "2023-11-14T22:13:20+00:00",
            "2023-11-14T22:13:20Z",
        ] {
            assert_eq!(parse_rendered_date(s), Some(1_700_000_000), "{s}");
        }
        assert_eq!(parse_rendered_date("2023-11-14 22:13:20Z"), None);
        assert_eq!(parse_rendered_date("2023-11-14T22:13:20+01:00"), None);
        assert_eq!(days_from_civil(2000, 2, 29) * 86_400, 951_782_400);
        assert_eq!(days_from_civil(1601, 1, 1), -134_774);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
    }

    #[test]
    fn uuids_are_v4_and_reproducible() {
        let a = Prng::new(7).uuid();
        assert_eq!(a, Prng::new(7).uuid());
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
