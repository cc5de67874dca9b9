//! UTC calendar time from the system clock, for run ids and run records.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC time to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UtcTime {
    year: u64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl UtcTime {
    pub(crate) fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// A clock set before 1970 reads as 1970-01-01.
    pub(crate) fn from_system(time: SystemTime) -> Self {
        let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = (secs % 86_400) as u32;
        UtcTime {
            year,
            month,
            day,
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }

    /// `20261121-235501`: sorts by time and is safe in a file name.
    pub(crate) fn compact(&self) -> String {
        let UtcTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        } = self;
        format!("{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}")
    }

    /// `2026-11-21T23:55:01Z` (RFC 3339).
    pub(crate) fn rfc3339(&self) -> String {
        let UtcTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        } = self;
        format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
    }
}

/// (year, month, day) of a count of days since 1970-01-01, in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`, for days after the epoch only). Years are counted from March
/// so that the leap day falls at the end of a year.
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted / 146_097; // 400-year cycles
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> UtcTime {
        UtcTime::from_system(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn known_instants() {
        assert_eq!(at(0).rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400).rfc3339(), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000).rfc3339(), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399).rfc3339(), "2100-02-28T23:59:59Z");
        assert_eq!(at(4_107_542_400).rfc3339(), "2100-03-01T00:00:00Z");
        assert_eq!(at(1_795_305_301).compact(), "20261121-235501");
    }

    #[test]
    fn a_clock_before_the_epoch_reads_as_the_epoch() {
        assert_eq!(
            UtcTime::from_system(UNIX_EPOCH - Duration::from_secs(5)),
            at(0)
        );
    }
}
