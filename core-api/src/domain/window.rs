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
/// The earliest year a window may start in. No bureau holds movements from before it, and
/// a year such as `-262143` (which chrono parses) would only reach the partners as a request
/// they cannot answer.
pub const EARLIEST_YEAR: i32 = 1970;

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
            // Checked although `to` is a plausible date: date arithmetic on input once
            // panicked here. The default never reaches before the earliest year.
            None => to
                .checked_sub_signed(chrono::Duration::days(DEFAULT_DAYS))
                .unwrap_or(NaiveDate::MIN)
                .max(earliest()),
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

fn earliest() -> NaiveDate {
    NaiveDate::from_ymd_opt(EARLIEST_YEAR, 1, 1).unwrap_or(NaiveDate::MIN)
}

fn date(field: &'static str, value: &str) -> Result<NaiveDate, WindowError> {
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| WindowError {
        field,
        detail: "must be a date as YYYY-MM-DD",
    })?;
    if date < earliest() {
        return Err(WindowError {
            field,
            detail: "must be in 1970 or later",
        });
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

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
    fn implausible_years_are_refused_not_panicked_on() {
        // `-262143-01-01` is chrono's first day: 90 days before it does not exist, and
        // subtracting them panicked once; such years are now refused by name.
        assert_eq!(NaiveDate::MIN.to_string(), "-262143-01-01");
        let bad = |from, to| Window::parse(from, to, today()).unwrap_err();
        assert_eq!(bad(None, Some("-262143-01-01")).field, "to");
        assert_eq!(bad(Some("-262143-01-01"), None).field, "from");
        assert_eq!(bad(Some("1969-12-31"), Some("1970-06-01")).field, "from");
        let w = Window::parse(None, Some("1970-02-01"), today()).unwrap();
        assert_eq!(
            w.from.to_string(),
            "1970-01-01",
            "the default start stops at 1970"
        );
    }

    fn any_date() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            "[+-]?[0-9]{1,7}-[0-9]{1,2}-[0-9]{1,2}",
            "(19[6-9][0-9]|20[0-3][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
            "\\PC{0,12}",
        ]
    }

    proptest::proptest! {
        /// Any pair of texts and any day: no panic, and a window that comes out keeps every
        /// promise the API makes of it.
        #[test]
        fn any_dates_give_a_valid_window_or_the_field_at_fault(
            from in proptest::option::of(any_date()),
            to in proptest::option::of(any_date()),
            days in 0i64..40_000,
        ) {
            let today = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days);
            match Window::parse(from.as_deref(), to.as_deref(), today) {
                Ok(w) => {
                    proptest::prop_assert!(w.from <= w.to && w.to <= today);
                    proptest::prop_assert!((w.to - w.from).num_days() <= MAX_DAYS);
                    proptest::prop_assert!(w.from.year() >= EARLIEST_YEAR);
                }
                Err(e) => proptest::prop_assert!(["from", "to"].contains(&e.field)),
            }
        }
    }
}
