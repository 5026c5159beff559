//! Deterministic bureau data: the same CPF always gets the same person, debts, assets and
//! movement history, so tests and benchmarks are repeatable and the classifier gets realistic
//! statement lines to label.

use chrono::{Datelike, Duration, NaiveDate};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::contract::{
    Asset, CardPurchase, ConsumerRecord, Debt, Movement, MovementsPage, RatingRecord,
};
use crate::cpf::Cpf;

const FIRST: &[&str] = &[
    "Ana", "Bruno", "Camila", "Diego", "Eduarda", "Felipe", "Gabriela", "Henrique", "Isabela",
    "João", "Larissa", "Marcos", "Natália", "Otávio", "Paula", "Rafael", "Sofia", "Tiago",
];
const LAST: &[&str] = &[
    "Silva",
    "Santos",
    "Oliveira",
    "Souza",
    "Lima",
    "Pereira",
    "Costa",
    "Rodrigues",
    "Almeida",
    "Nascimento",
    "Carvalho",
    "Araújo",
    "Ribeiro",
    "Gomes",
];
const STREETS: &[&str] = &[
    "Rua das Flores",
    "Av. Paulista",
    "Rua XV de Novembro",
    "Av. Brasil",
    "Rua Augusta",
    "Rua da Consolação",
    "Av. Atlântica",
    "Rua Sete de Setembro",
];
const CITIES: &[&str] = &[
    "São Paulo - SP",
    "Rio de Janeiro - RJ",
    "Belo Horizonte - MG",
    "Curitiba - PR",
    "Porto Alegre - RS",
    "Recife - PE",
    "Salvador - BA",
    "Campinas - SP",
];
const CREDITORS: &[&str] = &[
    "Banco do Brasil",
    "Itaú Unibanco",
    "Bradesco",
    "Santander",
    "Nubank",
    "Casas Bahia",
    "Magazine Luiza",
    "Vivo",
    "Enel",
    "Caixa",
];
const EMPLOYERS: &[&str] = &[
    "ACME TECNOLOGIA LTDA",
    "PREFEITURA MUNICIPAL",
    "SUPERMERCADOS ROCHA SA",
    "CONSTRUTORA ALVES LTDA",
    "HOSPITAL SANTA CLARA",
    "LOGISTICA RAPIDA ME",
];

/// A kind of movement: how it prints, its type hint, MCC, direction and typical size.
struct Pattern {
    texts: &'static [&'static str],
    tipo: Option<&'static str>,
    mcc: Option<&'static str>,
    inflow: bool,
    median: f64,
    weight: u32,
}

/// What a person does on any day, besides their fixed monthly items: amounts are scaled to
/// the person's income and budget (see [`movements`]).
const PATTERNS: &[Pattern] = &[
    Pattern {
        texts: &[
            "PADARIA REAL",
            "PAG*HORTIFRUTIBOM",
            "MERCADINHO BOM PRECO",
            "PAO DE ACUCAR 1123",
        ],
        tipo: Some("cartao"),
        mcc: Some("5411"),
        inflow: false,
        median: 40.0,
        weight: 12,
    },
    Pattern {
        texts: &[
            "IFOOD *IFOOD",
            "MCDONALDS 0231",
            "RESTAURANTE SABOR",
            "BAR DO ZE",
            "STARBUCKS PAULISTA",
        ],
        tipo: Some("cartao"),
        mcc: Some("5812"),
        inflow: false,
        median: 45.0,
        weight: 14,
    },
    Pattern {
        texts: &[
            "UBER *TRIP",
            "99APP *99POP",
            "AUTO POSTO SHELL",
            "POSTO IPIRANGA 22",
            "SEM PARAR",
        ],
        tipo: Some("cartao"),
        mcc: Some("4121"),
        inflow: false,
        median: 35.0,
        weight: 10,
    },
    Pattern {
        texts: &[
            "DROGASIL 0456",
            "DROGARIA SAO PAULO",
            "RAIA DROGASIL",
            "LAB FLEURY",
        ],
        tipo: Some("cartao"),
        mcc: Some("5912"),
        inflow: false,
        median: 70.0,
        weight: 5,
    },
    Pattern {
        texts: &[
            "AMAZON MARKETPLACE",
            "MERCADOLIVRE*LOJA",
            "RENNER SHOPPING",
            "MAGALU*MAGAZINE",
            "SHOPEE*VENDEDOR",
        ],
        tipo: Some("cartao"),
        mcc: Some("5311"),
        inflow: false,
        median: 120.0,
        weight: 6,
    },
    Pattern {
        texts: &[
            "PIX ENVIADO MARIA SOUZA",
            "PIX ENVIADO JOAO LIMA",
            "TED ENVIADA ITAU CARLOS",
        ],
        tipo: Some("pix"),
        mcc: None,
        inflow: false,
        median: 80.0,
        weight: 5,
    },
    Pattern {
        texts: &["PIX RECEBIDO ANA COSTA", "PIX RECEBIDO LUCAS ALVES"],
        tipo: Some("pix"),
        mcc: None,
        inflow: true,
        median: 40.0,
        weight: 2,
    },
    Pattern {
        texts: &["SAQUE 24H BANCO24HORAS", "SAQUE TERM ITAU 0042"],
        tipo: Some("saque"),
        mcc: None,
        inflow: false,
        median: 100.0,
        weight: 2,
    },
];

/// Who the bureaus say a person is: a few kinds of credit applicant, each with the income,
/// spending, debts and assets such a person has, so a summary's risk signals mean something.
/// Chosen by CPF ([`Profile::of`]), so the same CPF is always the same kind of person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A steady salary on the 5th, rent, bills and shopping close to it; few debts, paid.
    Salaried,
    /// Income as irregular PIX transfers from many people; declares more than comes in.
    Informal,
    /// An INSS benefit on the 25th, a payroll loan, a condominium fee instead of rent; one to
    /// two assets, all paid off.
    Retired,
    /// Salaried, with about a third of the income going to betting sites.
    Gambler,
    /// Salaried, with a personal loan, overdraft interest and many unpaid, overdue debts.
    OverIndebted,
    /// Young, a first small salary, few movements, no debts and no assets.
    ThinFile,
    /// None of the bureaus has a record (they answer 404).
    NoRecord,
}

impl Profile {
    pub const ALL: [Profile; 7] = [
        Profile::Salaried,
        Profile::Informal,
        Profile::Retired,
        Profile::Gambler,
        Profile::OverIndebted,
        Profile::ThinFile,
        Profile::NoRecord,
    ];

    /// The profile of a CPF: 40% salaried, 18% informal, 12% retired, 8% gamblers, 10%
    /// over-indebted, 8% thin files, 4% with no record.
    pub fn of(cpf: &Cpf) -> Self {
        match seed(cpf, 11) % 100 {
            0..40 => Profile::Salaried,
            40..58 => Profile::Informal,
            58..70 => Profile::Retired,
            70..78 => Profile::Gambler,
            78..88 => Profile::OverIndebted,
            88..96 => Profile::ThinFile,
            _ => Profile::NoRecord,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Salaried => "salaried",
            Profile::Informal => "informal",
            Profile::Retired => "retired",
            Profile::Gambler => "gambler",
            Profile::OverIndebted => "over_indebted",
            Profile::ThinFile => "thin_file",
            Profile::NoRecord => "no_record",
        }
    }

    /// The median of the monthly income such people have, in BRL.
    fn median_income(self) -> f64 {
        match self {
            Profile::Salaried => 4200.0,
            Profile::Informal => 2800.0,
            Profile::Retired => 2400.0,
            Profile::Gambler => 3800.0,
            Profile::OverIndebted => 3500.0,
            Profile::ThinFile | Profile::NoRecord => 1600.0,
        }
    }

    /// Money out over money in, over a month.
    fn spend_ratio(self) -> f64 {
        match self {
            Profile::Salaried => 0.95,
            Profile::Informal => 0.97,
            Profile::Retired => 0.9,
            Profile::Gambler => 1.05,
            Profile::OverIndebted => 1.15,
            Profile::ThinFile | Profile::NoRecord => 0.9,
        }
    }

    /// Everyday movements a day (when the simulator does not set a rate).
    fn daily_rate(self) -> f64 {
        match self {
            Profile::Salaried | Profile::Gambler => 3.0,
            Profile::Informal => 2.5,
            Profile::Retired => 1.5,
            Profile::OverIndebted => 3.5,
            Profile::ThinFile | Profile::NoRecord => 0.8,
        }
    }
}

/// A monthly item: on which day, how it prints, its type, and its amount as a share of the
/// monthly income (or a fixed amount, when `fixed`).
struct Monthly {
    day: u32,
    text: &'static str,
    tipo: &'static str,
    share: f64,
    fixed: Option<f64>,
}

const fn share(day: u32, text: &'static str, tipo: &'static str, share: f64) -> Monthly {
    Monthly {
        day,
        text,
        tipo,
        share,
        fixed: None,
    }
}

const fn fixed(day: u32, text: &'static str, tipo: &'static str, amount: f64) -> Monthly {
    Monthly {
        day,
        text,
        tipo,
        share: 0.0,
        fixed: Some(amount),
    }
}

/// The money out each month on fixed days: rent, bills, subscriptions, loans.
fn monthly_items(profile: Profile) -> &'static [Monthly] {
    const BILLS_RENT: &[Monthly] = &[
        fixed(1, "TARIFA PACOTE SERVICOS", "tarifa", 34.9),
        share(10, "ALUGUEL IMOBILIARIA LAR", "boleto", 0.25),
        share(15, "DEB AUT ENEL", "debito_automatico", 0.035),
        share(17, "SABESP", "debito_automatico", 0.015),
        fixed(20, "VIVO FIBRA", "debito_automatico", 119.9),
        fixed(12, "NETFLIX.COM", "cartao", 39.9),
    ];
    const RETIRED: &[Monthly] = &[
        fixed(1, "TARIFA PACOTE SERVICOS", "tarifa", 19.9),
        share(10, "CONDOMINIO EDIFICIO SOL", "boleto", 0.12),
        share(15, "DEB AUT ENEL", "debito_automatico", 0.04),
        share(17, "SABESP", "debito_automatico", 0.02),
        fixed(20, "VIVO FIXO", "debito_automatico", 89.9),
        share(26, "CONSIGNADO INSS PARC 18/84", "debito_automatico", 0.15),
    ];
    const OVER_INDEBTED: &[Monthly] = &[
        fixed(1, "TARIFA PACOTE SERVICOS", "tarifa", 34.9),
        share(1, "JUROS CHEQUE ESPECIAL", "tarifa", 0.04),
        share(1, "IOF", "tarifa", 0.006),
        share(8, "PARCELA EMPRESTIMO 05/24", "boleto", 0.22),
        share(10, "ALUGUEL IMOBILIARIA LAR", "boleto", 0.25),
        share(15, "DEB AUT ENEL", "debito_automatico", 0.035),
        share(17, "SABESP", "debito_automatico", 0.015),
        fixed(20, "VIVO FIBRA", "debito_automatico", 119.9),
    ];
    const THIN: &[Monthly] = &[
        fixed(12, "SPOTIFY", "cartao", 21.9),
        fixed(20, "VIVO CONTROLE", "debito_automatico", 59.9),
        share(10, "PIX ENVIADO MAE AJUDA CASA", "pix", 0.1),
    ];
    match profile {
        Profile::Retired => RETIRED,
        Profile::OverIndebted => OVER_INDEBTED,
        Profile::ThinFile | Profile::NoRecord => THIN,
        _ => BILLS_RENT,
    }
}

/// A month's fixed items in BRL, for a monthly income of `income`.
fn monthly_total(profile: Profile, income: f64) -> f64 {
    monthly_items(profile)
        .iter()
        .map(|m| m.fixed.unwrap_or(m.share * income))
        .sum()
}

/// Weekly groceries (on Saturdays) as a share of the monthly income, a shop each week.
const GROCERIES_SHARE: f64 = 0.045;
const GROCERIES: &[&str] = &[
    "ASSAI ATACADISTA",
    "CARREFOUR HIPER 012",
    "SUPERMERCADO ROCHA",
];
/// What a gambler sends to betting sites, as a share of the monthly income.
const GAMBLING_SHARE: f64 = 0.35;
const BETS: &[&str] = &[
    "BET365",
    "BETANO",
    "PIX ENVIADO BLAZE APOSTAS",
    "LOTERIAS CAIXA",
];
/// Days of a month, on average.
const MONTH_DAYS: f64 = 30.4375;
/// The mean of [`money`] over its median (a log-normal with sigma 0.7).
const MEAN_OVER_MEDIAN: f64 = 1.2776;

/// A stable seed for a CPF and a salt, so each bureau and each day draws its own stream.
fn seed(cpf: &Cpf, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in cpf.digits().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn rng(cpf: &Cpf, salt: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed(cpf, salt))
}

/// Whether the bureaus hold no record of this CPF: its profile says so, or it falls within
/// the simulator's `missing_rate` (0..=1).
pub fn is_missing(cpf: &Cpf, missing_rate: f64) -> bool {
    Profile::of(cpf) == Profile::NoRecord
        || (seed(cpf, 99) % 10_000) as f64 / 10_000.0 < missing_rate
}

/// A CPF of someone the bureaus know (any profile but [`Profile::NoRecord`]), the `n`th of
/// them: tests and benchmarks that need every partner to answer draw their people here.
/// Different `n` below 62,500,000 give different CPFs, but for the rare base the CPF rules
/// adjust.
pub fn person_with_record(n: u32) -> Cpf {
    (0..16u64)
        .map(|k| Cpf::from_base(((n as u64 * 16 + k) % 1_000_000_000) as u32))
        .find(|c| Profile::of(c) != Profile::NoRecord)
        .expect("one in sixteen CPFs has a record at least")
}

/// The person's monthly income, in BRL: the same every month.
fn income(cpf: &Cpf) -> f64 {
    money(&mut rng(cpf, 5), Profile::of(cpf).median_income())
}

fn br_date(d: NaiveDate) -> String {
    format!("{:02}/{:02}/{:04}", d.day(), d.month(), d.year())
}

fn money(rng: &mut ChaCha8Rng, median: f64) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    ((median * (0.7 * z).exp()).clamp(1.0, 200_000.0) * 100.0).round() / 100.0
}

fn person(cpf: &Cpf) -> (String, String) {
    let mut r = rng(cpf, 1);
    let name = format!(
        "{} {} {}",
        FIRST.choose(&mut r).expect("pool"),
        LAST.choose(&mut r).expect("pool"),
        LAST.choose(&mut r).expect("pool")
    );
    let address = format!(
        "{}, {} - {}",
        STREETS.choose(&mut r).expect("pool"),
        r.random_range(10..3000),
        CITIES.choose(&mut r).expect("pool")
    );
    (name, address)
}

pub fn consumer(cpf: &Cpf, today: NaiveDate) -> ConsumerRecord {
    let (nome, endereco) = person(cpf);
    let profile = Profile::of(cpf);
    let monthly = income(cpf);
    let mut r = rng(cpf, 2);
    // How many debts, how likely each is paid, how large against the income, and how far
    // back (days before today) they fell due at most.
    let (n, paid, size, oldest) = match profile {
        Profile::Salaried => ([0, 0, 0, 1, 1, 2][r.random_range(0..6)], 0.85, 0.3, 720),
        Profile::Informal => ([0, 1, 1, 2][r.random_range(0..4)], 0.5, 0.4, 720),
        Profile::Retired => ([0, 0, 1][r.random_range(0..3)], 0.8, 0.3, 720),
        Profile::Gambler => (r.random_range(1..4), 0.4, 0.5, 360),
        Profile::OverIndebted => (r.random_range(6..11), 0.1, 1.2, 540),
        Profile::ThinFile | Profile::NoRecord => (0, 1.0, 0.0, 0),
    };
    let dividas = (0..n)
        .map(|_| {
            let due = today - Duration::days(r.random_range(-60..oldest));
            // Paid on or after its due date, never after today.
            let paid = (due < today && r.random_bool(paid))
                .then(|| br_date((due + Duration::days(r.random_range(0..40))).min(today)));
            Debt {
                valor: money(&mut r, size * monthly),
                empresa: CREDITORS.choose(&mut r).expect("pool").to_string(),
                data_vencimento: br_date(due),
                data_pagamento: paid,
            }
        })
        .collect();
    ConsumerRecord {
        cpf: cpf.digits(),
        nome,
        endereco,
        dividas,
    }
}

pub fn rating(cpf: &Cpf, today: NaiveDate) -> RatingRecord {
    let (_, endereco) = person(cpf);
    let profile = Profile::of(cpf);
    let monthly = income(cpf);
    let mut r = rng(cpf, 3);
    let employer = EMPLOYERS.choose(&mut r).expect("pool");
    let (idade, assets, fonte, declared) = match profile {
        Profile::Retired => (
            r.random_range(62..85),
            r.random_range(1..3),
            "Aposentadoria - INSS".to_string(),
            monthly,
        ),
        Profile::Informal => (
            r.random_range(22..60),
            r.random_range(0..2),
            "Autônomo - vendas e serviços".to_string(),
            // Declared above what comes in: the observed-to-declared signal shows it.
            monthly * 1.4,
        ),
        Profile::ThinFile | Profile::NoRecord => (
            r.random_range(18..24),
            0,
            format!("Salário - {employer}"),
            monthly,
        ),
        Profile::OverIndebted => (
            r.random_range(25..60),
            r.random_range(0..2),
            format!("Salário - {employer}"),
            monthly * 1.1,
        ),
        Profile::Salaried | Profile::Gambler => (
            r.random_range(22..62),
            r.random_range(0..4),
            format!("Salário - {employer}"),
            monthly * 1.1,
        ),
    };
    let birth = today - Duration::days(idade as i64 * 365 + r.random_range(0..365));
    let bens = (0..assets)
        .map(|_| Asset {
            tipo: ["imovel", "veiculo", "moto", "investimento"]
                .choose(&mut r)
                .expect("pool")
                .to_string(),
            inicio_posse: br_date(today - Duration::days(r.random_range(30..5000))),
            quitado: profile == Profile::Retired || r.random_bool(0.5),
        })
        .collect();
    RatingRecord {
        cpf: cpf.digits(),
        data_nascimento: br_date(birth),
        idade,
        endereco,
        fonte_de_renda: fonte,
        renda_mensal: (declared * 100.0).round() / 100.0,
        bens,
    }
}

/// Everyday movements a day: the profile's, unless the simulator sets a rate.
fn daily_rate(cpf: &Cpf, override_rate: Option<f64>) -> f64 {
    override_rate.unwrap_or_else(|| {
        // Within a profile, people differ: from half to one and a half times its rate.
        Profile::of(cpf).daily_rate() * (0.5 + (seed(cpf, 4) % 1000) as f64 / 1000.0)
    })
}

/// The whole history in `[from, to]`, in date order; pages are slices of it. Each day is
/// drawn on its own (a narrower window is a slice of a wider one): the profile's income and
/// fixed monthly items on their days, weekly groceries on Saturdays, a gambler's bets, and
/// everyday movements scaled so that a month's money out is about the profile's share of its
/// income.
pub fn movements(cpf: &Cpf, from: NaiveDate, to: NaiveDate, per_day: Option<f64>) -> Vec<Movement> {
    let profile = Profile::of(cpf);
    let monthly = income(cpf);
    let rate = daily_rate(cpf, per_day);
    let total_weight: u32 = PATTERNS.iter().map(|p| p.weight).sum();
    // The everyday money out a month: what the budget leaves after the fixed items, the
    // groceries and the bets; at least a tenth of the income.
    let gambling = if profile == Profile::Gambler {
        GAMBLING_SHARE * monthly
    } else {
        0.0
    };
    let budget = (profile.spend_ratio() * monthly
        - monthly_total(profile, monthly)
        - GROCERIES_SHARE * monthly * MONTH_DAYS / 7.0
        - gambling)
        .max(0.1 * monthly);
    let out_weight: u32 = PATTERNS
        .iter()
        .filter(|p| !p.inflow)
        .map(|p| p.weight)
        .sum();
    let mean_out = PATTERNS
        .iter()
        .filter(|p| !p.inflow)
        .map(|p| p.weight as f64 * p.median * MEAN_OVER_MEDIAN)
        .sum::<f64>()
        / out_weight as f64;
    let everyday_out = rate * MONTH_DAYS * out_weight as f64 / total_weight as f64;
    let scale = budget / (everyday_out.max(0.1) * mean_out);
    let employer = EMPLOYERS.choose(&mut rng(cpf, 3)).expect("pool");
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        let date = day.format("%Y%m%d");
        let mut r = rng(cpf, 1000 + day.num_days_from_ce() as u64);
        let mut push = |id: String, tipo: &str, valor: f64, descricao: String| {
            out.push(Movement {
                id,
                tipo: Some(tipo.into()),
                valor: (valor * 100.0).round() / 100.0,
                data: br_date(day),
                descricao,
                mcc: None,
            });
        };
        match profile {
            Profile::Retired if day.day() == 25 => push(
                format!("{date}-s"),
                "salario",
                monthly,
                "CRED INSS APOSENTADORIA".into(),
            ),
            // Paid by clients through the month, a few times a week.
            Profile::Informal if r.random_bool(0.35) => {
                let amount = money(&mut r, monthly / (0.35 * MONTH_DAYS * MEAN_OVER_MEDIAN));
                let from = FIRST.choose(&mut r).expect("pool");
                let last = LAST.choose(&mut r).expect("pool");
                push(
                    format!("{date}-s"),
                    "pix",
                    amount,
                    format!(
                        "PIX RECEBIDO {} {}",
                        from.to_uppercase(),
                        last.to_uppercase()
                    ),
                );
            }
            Profile::Informal | Profile::Retired => {}
            _ if day.day() == 5 => push(
                format!("{date}-s"),
                "salario",
                monthly,
                format!("SALARIO {employer}"),
            ),
            _ => {}
        }
        for (k, m) in monthly_items(profile).iter().enumerate() {
            if m.day == day.day() {
                let amount = m.fixed.unwrap_or(m.share * monthly);
                push(format!("{date}-f{k}"), m.tipo, -amount, m.text.into());
            }
        }
        if day.weekday() == chrono::Weekday::Sat {
            let amount = money(&mut r, GROCERIES_SHARE * monthly / MEAN_OVER_MEDIAN);
            let shop = GROCERIES.choose(&mut r).expect("pool");
            push(format!("{date}-g"), "cartao", -amount, shop.to_string());
        }
        if profile == Profile::Gambler && r.random_bool(0.6) {
            let amount = money(&mut r, gambling / (0.6 * MONTH_DAYS * MEAN_OVER_MEDIAN));
            let site = BETS.choose(&mut r).expect("pool");
            push(format!("{date}-b"), "pix", -amount, site.to_string());
        }
        // A whole number of everyday movements whose mean is the daily rate.
        let n = (rate + r.random::<f64>()).floor() as u32;
        for i in 0..n {
            let mut pick = r.random_range(0..total_weight);
            let pattern = PATTERNS
                .iter()
                .find(|p| {
                    if pick < p.weight {
                        true
                    } else {
                        pick -= p.weight;
                        false
                    }
                })
                .expect("weights add up");
            let amount = if pattern.inflow {
                money(&mut r, pattern.median)
            } else {
                money(&mut r, pattern.median * scale)
            };
            out.push(Movement {
                id: format!("{date}-{i}"),
                // The contract warns the type may be missing.
                tipo: pattern
                    .tipo
                    .filter(|_| r.random_bool(0.85))
                    .map(String::from),
                valor: if pattern.inflow { amount } else { -amount },
                data: br_date(day),
                descricao: pattern.texts.choose(&mut r).expect("pool").to_string(),
                mcc: pattern.mcc.filter(|_| r.random_bool(0.6)).map(String::from),
            });
        }
        day += Duration::days(1);
    }
    out
}

/// One page of the history: `cursor` is the offset of its first movement.
pub fn movements_page(
    cpf: &Cpf,
    from: NaiveDate,
    to: NaiveDate,
    cursor: usize,
    limit: usize,
    per_day: Option<f64>,
    today: NaiveDate,
) -> MovementsPage {
    let all = movements(cpf, from, to, per_day);
    let end = (cursor + limit).min(all.len());
    let page = all.get(cursor..end).map(<[_]>::to_vec).unwrap_or_default();
    let last_card = all
        .iter()
        .rev()
        .find(|m| m.tipo.as_deref() == Some("cartao"))
        .map(|m| CardPurchase {
            data: m.data.clone(),
            valor: -m.valor,
        });
    MovementsPage {
        cpf: cpf.digits(),
        ultima_consulta: br_date(today),
        ultima_compra_cc: last_card,
        movimentacao_financeira: page,
        proximo_cursor: (end < all.len()).then(|| end.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_same_cpf_always_gets_the_same_data() {
        let cpf = Cpf::from_base(123_456_789);
        let today = d("2026-11-21");
        assert_eq!(consumer(&cpf, today), consumer(&cpf, today));
        assert_eq!(rating(&cpf, today), rating(&cpf, today));
        let a = movements(&cpf, d("2026-08-01"), d("2026-10-31"), None);
        assert_eq!(a, movements(&cpf, d("2026-08-01"), d("2026-10-31"), None));
        assert!(a.len() > 100);
        // A narrower window is a slice of the wider one: days are generated independently.
        let sept = movements(&cpf, d("2026-09-01"), d("2026-09-30"), None);
        assert!(a.windows(sept.len()).any(|w| w == sept.as_slice()));
    }

    /// The CPFs the README gives for each profile.
    pub const PROFILE_CPFS: [(&str, Profile); 7] = [
        ("529.982.247-25", Profile::Salaried),
        ("100.000.000-19", Profile::Informal),
        ("100.000.021-43", Profile::Retired),
        ("100.000.004-42", Profile::Gambler),
        ("100.000.030-34", Profile::OverIndebted),
        ("100.000.001-08", Profile::ThinFile),
        ("100.000.007-95", Profile::NoRecord),
    ];

    #[test]
    fn each_profile_has_the_cpf_the_readme_gives_and_money_out_is_close_to_money_in() {
        let (from, to, today) = (d("2026-08-01"), d("2026-10-31"), d("2026-11-21"));
        for (cpf, profile) in PROFILE_CPFS {
            let cpf = Cpf::parse(cpf).unwrap();
            assert_eq!(Profile::of(&cpf), profile);
            if profile == Profile::NoRecord {
                assert!(is_missing(&cpf, 0.0));
                continue;
            }
            let all = movements(&cpf, from, to, None);
            let inflow: f64 = all.iter().filter(|m| m.valor > 0.0).map(|m| m.valor).sum();
            let outflow: f64 = all.iter().filter(|m| m.valor < 0.0).map(|m| -m.valor).sum();
            let ratio = outflow / inflow;
            assert!((0.6..1.6).contains(&ratio), "{profile:?}: out/in {ratio}");
            let declared = rating(&cpf, today).renda_mensal;
            let monthly_in = inflow / 3.0;
            assert!(
                (0.4..1.6).contains(&(monthly_in / declared)),
                "{profile:?}: {monthly_in} a month against {declared} declared"
            );
        }
    }

    #[test]
    fn pages_cover_the_history_exactly_once() {
        let cpf = Cpf::from_base(42);
        let (from, to, today) = (d("2026-01-01"), d("2026-03-31"), d("2026-11-21"));
        let all = movements(&cpf, from, to, Some(12.0));
        let mut seen = Vec::new();
        let mut cursor = 0;
        loop {
            let page = movements_page(&cpf, from, to, cursor, 500, Some(12.0), today);
            seen.extend(page.movimentacao_financeira);
            match page.proximo_cursor {
                Some(c) => cursor = c.parse().unwrap(),
                None => break,
            }
        }
        assert_eq!(seen, all);
        assert!(all.len() > 1000);
    }
}
