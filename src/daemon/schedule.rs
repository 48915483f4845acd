//! When the daemon runs: `[daemon] schedule`, a cron expression with a seconds field
//! (`sec min hour day-of-month month day-of-week [year]`, the `cron` crate's syntax), read
//! in the machine's local time zone (`TZ`), as cron itself does.

use std::str::FromStr;

use chrono::{Local, TimeZone};

/// A parsed `[daemon] schedule`.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: cron::Schedule,
}

impl Schedule {
    /// Parses `text`; the error says what is wrong in words the operator can act on.
    pub fn parse(text: &str) -> Result<Self, String> {
        let cron = cron::Schedule::from_str(text.trim()).map_err(|e| {
            format!(
                "`{text}` is not a cron expression with seconds (sec min hour day month weekday, e.g. \"0 */15 * * * *\"): {e}"
            )
        })?;
        let schedule = Self { cron };
        let now = Local::now().timestamp();
        if schedule.next_after(now).is_none() {
            return Err(format!("`{text}` never fires again"));
        }
        Ok(schedule)
    }

    /// The first tick strictly after `unix` (seconds), or `None` when there is none.
    pub fn next_after(&self, unix: i64) -> Option<i64> {
        let at = Local.timestamp_opt(unix, 0).earliest()?;
        self.cron.after(&at).next().map(|t| t.timestamp())
    }

    /// Ticks in `(from, to]`: the runs a long run made the daemon skip, and how far behind
    /// `/readyz` judges the last success to be.
    pub fn ticks_between(&self, from: i64, to: i64) -> u64 {
        let Some(at) = Local.timestamp_opt(from, 0).earliest() else {
            return 0;
        };
        self.cron
            .after(&at)
            .take_while(|t| t.timestamp() <= to)
            .take(1_000_000)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_expression() {
        let s = Schedule::parse("*/5 * * * * *").unwrap();
        let t = 1_700_000_000; // a multiple of 5 seconds
        assert_eq!(s.next_after(t), Some(t + 5));
        assert_eq!(s.next_after(t + 1), Some(t + 5));
        assert_eq!(s.ticks_between(t, t + 12), 2);
        assert_eq!(s.ticks_between(t, t + 4), 0);
        let quarter = Schedule::parse("0 */15 * * * *").unwrap();
        assert_eq!(quarter.ticks_between(t, t + 3600), 4);
    }

    #[test]
    fn a_five_field_crontab_line_is_refused_with_the_expected_shape() {
        let err = Schedule::parse("*/15 * * * *").unwrap_err();
        assert!(err.contains("with seconds"), "{err}");
        assert!(
            Schedule::parse("0 0 0 1 1 * 2001")
                .unwrap_err()
                .contains("never fires")
        );
    }
}
