//! The figures an analysis ends with: income, spend by category, net flow and risk signals,
//! computed from the classified movements and what the partners said.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use classifier::Label;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::window::Window;

/// What `analysis.completed` and a completed snapshot carry. Amounts are BRL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    pub window: SummaryWindow,
    /// Movements classified.
    pub transactions: u64,
    /// Money labelled INCOME per month of the window.
    pub monthly_income: f64,
    pub total_in: f64,
    pub total_out: f64,
    pub net_flow: f64,
    /// Money out per label, for the labels that occur.
    pub spend_by_category: BTreeMap<String, f64>,
    pub risk: Risk,
}

/// The window the figures cover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SummaryWindow {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Its length in months of 30.4375 days, to two decimals.
    pub months: f64,
}

/// The signals a credit analyst looks at first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Risk {
    /// Gambling's share of all money out, 0 to 1, to four decimals.
    pub gambling_share_of_spend: f64,
    pub gambling_total: f64,
    pub bank_fees_total: f64,
    pub cash_withdrawals_total: f64,
    pub loan_payments_total: f64,
    /// Debts the consumer bureau lists as unpaid.
    pub open_debts: u64,
    pub open_debts_total: f64,
    /// Unpaid debts past their due date.
    pub overdue_debts: u64,
    pub overdue_debts_total: f64,
    /// The income the rating bureau has on record, when it answered.
    pub declared_monthly_income: Option<f64>,
    /// `monthly_income` over the declared income, when there is one above zero.
    pub observed_to_declared_income: Option<f64>,
}

/// One classified movement, as the summary needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelledAmount {
    /// Signed: negative is money out.
    pub amount_cents: i64,
    pub label: Label,
}

/// What the summary needs of the classified movements, added up as they come: small and
/// fixed in size whatever the history's length, so a run can keep it with its progress and
/// another instance resuming the run goes on from it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u64,
    /// Money in, in cents.
    pub inflow: i64,
    /// Money labelled INCOME, in cents.
    pub income: i64,
    /// Money out, in cents (positive).
    pub outflow: i64,
    /// Money out per label, in cents (positive).
    pub spend: BTreeMap<String, i64>,
}

impl Tally {
    pub fn add(&mut self, m: LabelledAmount) {
        self.count += 1;
        if m.amount_cents >= 0 {
            self.inflow += m.amount_cents;
            if m.label == Label::Income {
                self.income += m.amount_cents;
            }
        } else {
            self.outflow += -m.amount_cents;
            *self.spend.entry(m.label.as_str().to_string()).or_default() += -m.amount_cents;
        }
    }
}

/// One unpaid debt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenDebt {
    pub amount: f64,
    /// `None` when the bureau's due date could not be read.
    pub due: Option<NaiveDate>,
}

fn reais(cents: i64) -> f64 {
    cents as f64 / 100.0
}

fn round_to(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

impl Summary {
    /// The figures of the movements `tally` added up over `window`, with the partners' open
    /// debts and declared income; a debt is overdue when its due date is before `today`.
    pub fn compute(
        window: Window,
        tally: &Tally,
        open_debts: &[OpenDebt],
        declared_monthly_income: Option<f64>,
        today: NaiveDate,
    ) -> Summary {
        let days = (window.to - window.from).num_days() + 1;
        let months = (days as f64 / 30.4375).max(1.0 / 30.4375);
        let (spend, inflow, outflow, income) =
            (&tally.spend, tally.inflow, tally.outflow, tally.income);
        let of = |l: Label| spend.get(l.as_str()).copied().unwrap_or(0);
        let share = |cents: i64| {
            if outflow > 0 {
                cents as f64 / outflow as f64
            } else {
                0.0
            }
        };
        let overdue: Vec<&OpenDebt> = open_debts
            .iter()
            .filter(|d| d.due.is_some_and(|due| due < today))
            .collect();
        let observed = reais(income) / months;
        Summary {
            window: SummaryWindow {
                from: window.from,
                to: window.to,
                months: round_to(months, 2),
            },
            transactions: tally.count,
            monthly_income: round_to(observed, 2),
            total_in: reais(inflow),
            total_out: reais(outflow),
            net_flow: reais(inflow - outflow),
            spend_by_category: spend
                .iter()
                .map(|(k, v)| (k.to_string(), reais(*v)))
                .collect(),
            risk: Risk {
                gambling_share_of_spend: round_to(share(of(Label::Gambling)), 4),
                gambling_total: reais(of(Label::Gambling)),
                bank_fees_total: reais(of(Label::BankFees)),
                cash_withdrawals_total: reais(of(Label::TransferOutWithdrawal)),
                loan_payments_total: reais(of(Label::LoanPayments)),
                open_debts: open_debts.len() as u64,
                open_debts_total: round_to(open_debts.iter().map(|d| d.amount).sum(), 2),
                overdue_debts: overdue.len() as u64,
                overdue_debts_total: round_to(overdue.iter().map(|d| d.amount).sum(), 2),
                declared_monthly_income,
                observed_to_declared_income: declared_monthly_income
                    .filter(|d| *d > 0.0)
                    .map(|d| round_to(observed / d, 2)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn income_spend_and_debts_add_up_as_an_analyst_reads_them() {
        let window = Window {
            from: day("2026-08-24"),
            to: day("2026-11-21"),
        };
        let m = |amount_cents, label| LabelledAmount {
            amount_cents,
            label,
        };
        let movements = [
            m(300_000, Label::Income),
            m(50_000, Label::TransferIn),
            m(-10_000, Label::Gambling),
            m(-30_000, Label::Groceries),
        ];
        let debts = [
            OpenDebt {
                amount: 100.0,
                due: Some(day("2026-01-01")),
            },
            OpenDebt {
                amount: 50.5,
                due: None,
            },
        ];
        let mut tally = Tally::default();
        movements.into_iter().for_each(|m| tally.add(m));
        let s = Summary::compute(window, &tally, &debts, Some(1000.0), day("2026-11-21"));
        assert_eq!(s.window.months, 2.96);
        assert_eq!(s.transactions, 4);
        assert_eq!(
            (s.total_in, s.total_out, s.net_flow),
            (3500.0, 400.0, 3100.0)
        );
        assert_eq!(
            s.spend_by_category["ENTERTAINMENT_CASINOS_AND_GAMBLING"],
            100.0
        );
        assert_eq!(s.risk.gambling_share_of_spend, 0.25);
        assert_eq!((s.risk.open_debts, s.risk.open_debts_total), (2, 150.5));
        assert_eq!(
            (s.risk.overdue_debts, s.risk.overdue_debts_total),
            (1, 100.0)
        );
        assert_eq!(s.monthly_income, 1014.58);
        assert_eq!(s.risk.observed_to_declared_income, Some(1.01));
    }

    #[test]
    fn an_empty_history_divides_by_nothing() {
        let window = Window {
            from: day("2026-11-21"),
            to: day("2026-11-21"),
        };
        let s = Summary::compute(window, &Tally::default(), &[], Some(0.0), day("2026-11-21"));
        assert_eq!(s.risk.gambling_share_of_spend, 0.0);
        assert_eq!(s.risk.observed_to_declared_income, None);
        assert!(s.monthly_income.is_finite());
    }
}
