//! The `Date` header value (IMF-fixdate), formatted once per second.

/// Caches the formatted date for the current second.
pub struct HttpDate {
    second: u64,
    text: [u8; 29],
}

impl Default for HttpDate {
    fn default() -> Self {
        let mut date = HttpDate {
            second: u64::MAX,
            text: [b' '; 29],
        };
        date.update(0);
        date
    }
}

impl HttpDate {
    /// Brings the text up to date for `unix_seconds`.
    pub fn update(&mut self, unix_seconds: u64) {
        if unix_seconds == self.second {
            return;
        }
        self.second = unix_seconds;
        const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let days = unix_seconds / 86_400;
        let secs = unix_seconds % 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        let t = &mut self.text;
        t[..3].copy_from_slice(DAYS[(days % 7) as usize]);
        t[3..5].copy_from_slice(b", ");
        two(&mut t[5..7], day as u64);
        t[7] = b' ';
        t[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
        t[11] = b' ';
        four(&mut t[12..16], year as u64);
        t[16] = b' ';
        time_of_day(&mut t[17..25], secs);
        t[25..29].copy_from_slice(b" GMT");
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
}

/// Writes `unix_seconds` as `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC).
pub fn format_rfc3339(unix_seconds: u64, out: &mut [u8; 20]) {
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    four(&mut out[0..4], year as u64);
    out[4] = b'-';
    two(&mut out[5..7], u64::from(month));
    out[7] = b'-';
    two(&mut out[8..10], u64::from(day));
    out[10] = b'T';
    time_of_day(&mut out[11..19], secs);
    out[19] = b'Z';
}

/// `HH:MM:SS` for the seconds since midnight.
fn time_of_day(out: &mut [u8], secs: u64) {
    two(&mut out[0..2], secs / 3600);
    out[2] = b':';
    two(&mut out[3..5], secs / 60 % 60);
    out[5] = b':';
    two(&mut out[6..8], secs % 60);
}

/// A year as four digits.
fn four(out: &mut [u8], year: u64) {
    two(&mut out[0..2], year / 100 % 100);
    two(&mut out[2..4], year % 100);
}

fn two(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(secs: u64) -> String {
        let mut d = HttpDate::default();
        d.update(secs);
        String::from_utf8(d.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn rfc3339() {
        let mut out = [0u8; 20];
        format_rfc3339(784_111_777, &mut out);
        assert_eq!(&out, b"1994-11-06T08:49:37Z");
    }

    #[test]
    fn known_dates() {
        assert_eq!(fmt(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(fmt(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(fmt(1_709_208_000), "Thu, 29 Feb 2024 12:00:00 GMT");
        assert_eq!(fmt(1_795_651_199), "Wed, 25 Nov 2026 23:59:59 GMT");
    }
}
