//! The window of history an analysis covers, checked as the API documents it.

use chrono::NaiveDate;

/// The days an analysis covers, both included: not in the future, `from` not after `to`, at
/// most 366 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// What is wrong with a requested window: the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct WindowError {
    /// `from` or `to`.
    pub field: &'static str,
    pub detail: &'static str,
}

/// Days of history when the client gives no `from`.
pub const DEFAULT_DAYS: i64 = 90;
/// The longest window, in days.
pub const MAX_DAYS: i64 = 366;

impl Window {
    /// The window from optional `YYYY-MM-DD` dates: `to` defaults to `today`, `from` to
    /// [`DEFAULT_DAYS`] before `to`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        today: NaiveDate,
    ) -> Result<Window, WindowError> {
        let to = to.map(|v| date("to", v)).transpose()?.unwrap_or(today);
        let from = match from {
            Some(v) => date("from", v)?,
            // 90 days before the earliest day chrono represents does not exist: the window
            // then starts on that day rather than panicking.
            None => to
                .checked_sub_signed(chrono::Duration::days(DEFAULT_DAYS))
                .unwrap_or(NaiveDate::MIN),
        };
        if to > today {
            return Err(WindowError {
                field: "to",
                detail: "must not be in the future",
            });
        }
        if from > to {
            return Err(WindowError {
                field: "from",
                detail: "must not be after `to`",
            });
        }
        if (to - from).num_days() > MAX_DAYS {
            return Err(WindowError {
                field: "from",
                detail: "the window spans at most 366 days",
            });
        }
        Ok(Window { from, to })
    }
}

fn date(field: &'static str, value: &str) -> Result<NaiveDate, WindowError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| WindowError {
        field,
        detail: "must be a date as YYYY-MM-DD",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
    }

    #[test]
    fn no_dates_mean_the_ninety_days_up_to_today() {
        let w = Window::parse(None, None, today()).unwrap();
        assert_eq!(w.to, today());
        assert_eq!((w.to - w.from).num_days(), 90);
    }

    #[test]
    fn each_bad_window_names_its_field() {
        let bad = |from, to| Window::parse(from, to, today()).unwrap_err().field;
        assert_eq!(bad(None, Some("2026-13-01")), "to");
        assert_eq!(bad(Some("21/11/2026"), None), "from");
        assert_eq!(bad(None, Some("2026-11-22")), "to");
        assert_eq!(bad(Some("2026-11-20"), Some("2026-11-19")), "from");
        assert_eq!(bad(Some("2025-01-01"), Some("2026-11-21")), "from");
    }

    #[test]
    fn the_earliest_date_chrono_parses_gives_a_window_not_a_panic() {
        // `-262143-01-01` is chrono's first day: 90 days before it does not exist, and
        // subtracting them panicked before; the window now starts on that day.
        assert_eq!(NaiveDate::MIN.to_string(), "-262143-01-01");
        let w = Window::parse(None, Some("-262143-01-01"), today()).unwrap();
        assert_eq!((w.from, w.to), (NaiveDate::MIN, NaiveDate::MIN));
        let w = Window::parse(None, Some("-262143-12-31"), today()).unwrap();
        assert_eq!((w.to - w.from).num_days(), 90);
    }
}
