//! Statement styles ("format families"): how one bank or app prints each kind of movement.
//!
//! Every corpus row is printed in one family's style and carries its name in the `family`
//! column, so an evaluation can hold a whole family out of training and ask how the model does
//! on a bank it has never seen (`benches/classifier_quality.sh`). The styles follow what the
//! large Brazilian banks and wallets print, as their customers see it in statements and app
//! exports: card purchases with the merchant's trading name cut to 22 characters and a city,
//! debit purchases with a network word (`VISA ELECTRON`, `COMPRA ELO`), PIX and boletos with
//! the payee's legal name, direct debits with a short prefix (`DA`, `DEB AUT`), title-case app
//! lines (`Transferência enviada pelo Pix - ...`), card-acquirer descriptors (`MP*`, `PAG*`,
//! `IFD*`), and English lines of foreign cards and fintech exports.

use super::pools::PROCESSORS;
use super::{title_case, Gen};

/// A statement style. The names are stable: they are written in the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Upper case, names cut to 22 characters with the city, `PIX TRANSF`, `DA` debits.
    Itau,
    /// Network words on debit purchases, `DES:`/`REM:` on PIX, `PAGTO ELETRON COBRANCA`.
    Bradesco,
    /// Short codes: `COMPRA ELO`, `ENVIO PIX`, `CRED PIX`, lines cut to 25 characters.
    Caixa,
    /// A digital bank's app export: title case, accents, `Compra no débito - ...`.
    Nubank,
    /// Wallets and acquirers: `MP*NAME`, `PAG*NAME`, `Pagamento para ...`.
    Wallet,
    /// English: foreign cards and fintech exports (`POS ... BRA`, `Card payment to ...`).
    Intl,
}

pub const FAMILIES: [Family; 6] = [
    Family::Itau,
    Family::Bradesco,
    Family::Caixa,
    Family::Nubank,
    Family::Wallet,
    Family::Intl,
];

/// What happened, before a family prints it.
pub enum Movement<'a> {
    /// A card purchase at a merchant's trading name.
    Card {
        name: &'a str,
        city: &'a str,
        uf: &'a str,
    },
    /// PIX sent to or received from a person or a business (its legal name).
    PixOut(&'a str),
    PixIn(&'a str),
    /// A boleto paid to a business (its legal name).
    Boleto(&'a str),
    /// A direct debit (débito automático) to a business.
    DirectDebit(&'a str),
    /// A cash withdrawal at an ATM network or bank.
    Withdrawal(&'a str),
    /// A line the bank writes itself (fees, salary credits, taxes), already phrased.
    Line(&'a str),
}

impl Movement<'_> {
    /// The bureau movement type a movement's kind implies; a card purchase's depends on how the
    /// family prints it, and a bank line's on its words, so both are `""` here.
    pub fn kind(&self) -> &'static str {
        match self {
            Movement::PixOut(_) | Movement::PixIn(_) => "pix",
            Movement::Boleto(_) => "boleto",
            Movement::DirectDebit(_) => "debito_automatico",
            Movement::Withdrawal(_) => "saque",
            Movement::Card { .. } | Movement::Line(_) => "",
        }
    }
}

/// Acquirer descriptors beside the processors of the pools: iFood, Stone, Cielo, Getnet.
const ACQUIRERS: &[&str] = &["IFD*", "STONE*", "CIELO*", "GETNET*", "PG *", "SUMUP*"];

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect::<String>().trim_end().to_string()
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Itau => "itau",
            Family::Bradesco => "bradesco",
            Family::Caixa => "caixa",
            Family::Nubank => "nubank",
            Family::Wallet => "wallet",
            Family::Intl => "intl",
        }
    }

    /// Prints a movement in this family's style: the description and the bureau movement type
    /// it goes with.
    pub(super) fn print(self, g: &mut Gen, movement: &Movement<'_>) -> (String, &'static str) {
        let printed = match *movement {
            Movement::Card { name, city, uf } => return self.card(g, name, city, uf),
            Movement::PixOut(name) => self.pix_out(g, name),
            Movement::PixIn(name) => self.pix_in(g, name),
            Movement::Boleto(name) => self.boleto(g, name),
            Movement::DirectDebit(name) => self.direct_debit(g, name),
            Movement::Withdrawal(name) => self.withdrawal(g, name),
            Movement::Line(text) => self.line(g, text),
        };
        (printed, movement.kind())
    }

    fn card(self, g: &mut Gen, name: &str, city: &str, uf: &str) -> (String, &'static str) {
        let parc = |g: &mut Gen| {
            let n = g.range(2, 12);
            (g.range(1, n), n)
        };
        match self {
            Family::Itau => match g.range(0, 3) {
                0 => (format!("{} {}", cut(name, 22), cut(city, 13)), "cartao"),
                1 => (cut(name, 22), "cartao"),
                2 => {
                    let (i, n) = parc(g);
                    (format!("{} PARC {i:02}/{n:02}", cut(name, 18)), "cartao")
                }
                _ => (format!("{} {}", cut(name, 22), uf), "cartao"),
            },
            Family::Bradesco => match g.range(0, 3) {
                0 => (format!("VISA ELECTRON {}", cut(name, 22)), "debito"),
                1 => (format!("COMPRA CARTAO DEB MC {}", cut(name, 22)), "debito"),
                2 => (format!("{} {} BRA", cut(name, 22), cut(city, 13)), "cartao"),
                _ => (format!("GASTO CARTAO {}", cut(name, 22)), "cartao"),
            },
            Family::Caixa => match g.range(0, 2) {
                0 => (format!("COMPRA ELO {}", cut(name, 22)), "debito"),
                1 => (format!("CP ELO {}", cut(name, 22)), "debito"),
                _ => (format!("COMPRA {} {uf}", cut(name, 22)), "cartao"),
            },
            Family::Nubank => match g.range(0, 2) {
                0 => (title_case(name), "cartao"),
                1 => {
                    let (i, n) = parc(g);
                    (format!("{} - Parcela {i}/{n}", title_case(name)), "cartao")
                }
                _ => (format!("Compra no débito - {}", title_case(name)), "debito"),
            },
            Family::Wallet => {
                let squashed: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
                match g.range(0, 2) {
                    0 => (
                        cut(&format!("{}{squashed}", g.pick(PROCESSORS)), 22),
                        "cartao",
                    ),
                    1 => (
                        cut(&format!("{}{squashed}", g.pick(ACQUIRERS)), 22),
                        "cartao",
                    ),
                    _ => (
                        format!("Pagamento com cartão {}", title_case(name)),
                        "cartao",
                    ),
                }
            }
            Family::Intl => match g.range(0, 3) {
                0 => (
                    format!("POS {} {} BRA", cut(name, 22), cut(city, 13)),
                    "cartao",
                ),
                1 => (format!("Card payment to {}", title_case(name)), "cartao"),
                2 => (
                    format!("PURCHASE {} {} BR", cut(name, 22), cut(city, 13)),
                    "cartao",
                ),
                _ => (format!("{} {} BR", cut(name, 22), cut(city, 13)), "cartao"),
            },
        }
    }

    fn pix_out(self, g: &mut Gen, name: &str) -> String {
        match self {
            Family::Itau => match g.range(0, 2) {
                0 => format!("PIX TRANSF {} {}", cut(name, 25), g.day_month()),
                1 => format!("SISPAG PIX {name}"),
                _ => format!("PIX ENVIADO {name}"),
            },
            Family::Bradesco => match g.range(0, 1) {
                0 => format!("TRANSFERENCIA PIX DES: {name}"),
                _ => format!("PIX ENVIADO DES: {} {}", cut(name, 25), g.day_month()),
            },
            Family::Caixa => match g.range(0, 1) {
                0 => format!("ENVIO PIX {}", cut(name, 25)),
                _ => format!("PIX ENV {}", cut(name, 25)),
            },
            Family::Nubank => format!("Transferência enviada pelo Pix - {}", title_case(name)),
            Family::Wallet => match g.range(0, 1) {
                0 => format!("Pagamento para {}", title_case(name)),
                _ => format!("Pix enviado para {}", title_case(name)),
            },
            Family::Intl => match g.range(0, 1) {
                0 => format!("Transfer to {}", title_case(name)),
                _ => format!("PIX SENT {name}"),
            },
        }
    }

    fn pix_in(self, g: &mut Gen, name: &str) -> String {
        match self {
            Family::Itau => match g.range(0, 1) {
                0 => format!("PIX TRANSF {} {}", cut(name, 25), g.day_month()),
                _ => format!("PIX RECEBIDO {name}"),
            },
            Family::Bradesco => format!("TRANSFERENCIA PIX REM: {name}"),
            Family::Caixa => match g.range(0, 1) {
                0 => format!("CRED PIX {}", cut(name, 25)),
                _ => format!("PIX REC {}", cut(name, 25)),
            },
            Family::Nubank => format!("Transferência recebida pelo Pix - {}", title_case(name)),
            Family::Wallet => match g.range(0, 1) {
                0 => format!("Pix recebido de {}", title_case(name)),
                _ => format!("Dinheiro recebido de {}", title_case(name)),
            },
            Family::Intl => match g.range(0, 1) {
                0 => format!("Transfer from {}", title_case(name)),
                _ => format!("PIX RECEIVED {name}"),
            },
        }
    }

    fn boleto(self, g: &mut Gen, name: &str) -> String {
        match self {
            Family::Itau => match g.range(0, 1) {
                0 => format!("PAG BOLETO {name}"),
                _ => format!("PAGTO TITULO {}", cut(name, 25)),
            },
            Family::Bradesco => match g.range(0, 1) {
                0 => format!("PAGTO ELETRON COBRANCA {name}"),
                _ => format!("PAGTO COBRANCA {name}"),
            },
            Family::Caixa => format!("PG BOLETO {}", cut(name, 25)),
            Family::Nubank => format!("Pagamento de boleto efetuado - {}", title_case(name)),
            Family::Wallet => format!("Pagamento de conta {}", title_case(name)),
            Family::Intl => format!("Bill payment {}", title_case(name)),
        }
    }

    fn direct_debit(self, g: &mut Gen, name: &str) -> String {
        match self {
            Family::Itau => match g.range(0, 1) {
                0 => format!("DA {}", cut(name, 25)),
                _ => format!("DEB AUT {name}"),
            },
            Family::Bradesco => match g.range(0, 1) {
                0 => format!("DEB AUTOMATICO {name}"),
                _ => format!("DEBITO AUT. {name}"),
            },
            Family::Caixa => format!("DEB CONV {}", cut(name, 25)),
            Family::Nubank => format!("Débito automático - {}", title_case(name)),
            Family::Wallet => format!("Débito em conta {}", title_case(name)),
            Family::Intl => format!("Direct debit {}", title_case(name)),
        }
    }

    fn withdrawal(self, g: &mut Gen, name: &str) -> String {
        match self {
            Family::Itau => format!("SAQUE 24H {}", cut(name, 22)),
            Family::Bradesco => format!("SAQUE {} {}", cut(name, 22), g.day_month()),
            Family::Caixa => format!("SAQ ATM {}", cut(name, 20)),
            Family::Nubank => format!("Saque - {}", title_case(name)),
            Family::Wallet => format!("Saque no {}", title_case(name)),
            Family::Intl => format!("ATM withdrawal {}", title_case(name)),
        }
    }

    fn line(self, g: &mut Gen, text: &str) -> String {
        match self {
            Family::Itau if g.chance(0.2) => format!("{text} {}", g.day_month()),
            Family::Bradesco if g.chance(0.2) => format!("{text} DOC {}", g.digits(6)),
            Family::Caixa => cut(text, 25),
            Family::Nubank | Family::Wallet => title_case(&text.to_lowercase()),
            _ => text.to_string(),
        }
    }
}

/// English phrasings of the lines a bank writes itself, for the `intl` family. Labels without
/// an entry print their Portuguese lines (a foreign card used in Brazil still shows them).
pub fn english_lines(label: crate::labels::Label) -> &'static [&'static str] {
    use crate::labels::Label;
    match label {
        Label::Income => &[
            "SALARY {EMP}",
            "PAYROLL {EMP}",
            "PENSION INSS {N6}",
            "INTEREST EARNED",
            "DIVIDEND {TICKER}",
            "TAX REFUND IRPF",
            "Salary payment {EMP}",
        ],
        Label::TransferOut => &["INVESTMENT DEPOSIT", "SAVINGS TRANSFER", "Move to savings"],
        Label::TransferOutWithdrawal => &["ATM WITHDRAWAL {CITY}", "CASH WITHDRAWAL", "ATM WDL"],
        Label::LoanPayments => &[
            "LOAN REPAYMENT {NN}/{NN}",
            "CREDIT CARD PAYMENT",
            "CAR FINANCING {NN}/{NN}",
            "MORTGAGE PAYMENT",
            "Card bill payment",
        ],
        Label::BankFees => &[
            "MONTHLY FEE",
            "ACCOUNT FEE",
            "IOF TAX",
            "OVERDRAFT INTEREST",
            "CARD ANNUAL FEE",
            "FX FEE",
            "Service charge",
        ],
        Label::Government => &[
            "TAX PAYMENT DARF",
            "VEHICLE TAX IPVA {UF}",
            "PROPERTY TAX IPTU {CITY}",
            "DONATION {NGO}",
            "TRAFFIC FINE DETRAN {UF}",
        ],
        Label::RentAndUtilities => &["RENT {MONTH}", "CONDO FEE", "Rent payment"],
        _ => &[],
    }
}
