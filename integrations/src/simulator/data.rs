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

const PATTERNS: &[Pattern] = &[
    Pattern {
        texts: &[
            "SUPERMERCADO ROCHA",
            "CARREFOUR HIPER 012",
            "ASSAI ATACADISTA",
            "PAG*HORTIFRUTIBOM",
            "PAO DE ACUCAR 1123",
        ],
        tipo: Some("cartao"),
        mcc: Some("5411"),
        inflow: false,
        median: 140.0,
        weight: 14,
    },
    Pattern {
        texts: &[
            "IFOOD *IFOOD",
            "PADARIA REAL",
            "MCDONALDS 0231",
            "RESTAURANTE SABOR",
            "BAR DO ZE",
            "STARBUCKS PAULISTA",
        ],
        tipo: Some("cartao"),
        mcc: Some("5812"),
        inflow: false,
        median: 45.0,
        weight: 16,
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
        weight: 8,
    },
    Pattern {
        texts: &["NETFLIX.COM", "SPOTIFY", "DISNEY PLUS", "CINEMARK"],
        tipo: Some("cartao"),
        mcc: Some("5815"),
        inflow: false,
        median: 40.0,
        weight: 3,
    },
    Pattern {
        texts: &[
            "BET365",
            "BETANO",
            "PIX ENVIADO BLAZE APOSTAS",
            "LOTERIAS CAIXA",
        ],
        tipo: Some("pix"),
        mcc: None,
        inflow: false,
        median: 50.0,
        weight: 2,
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
        median: 150.0,
        weight: 7,
    },
    Pattern {
        texts: &[
            "PIX RECEBIDO ANA COSTA",
            "TED RECEBIDA BRADESCO PAULO",
            "PIX RECEBIDO LUCAS ALVES",
        ],
        tipo: Some("pix"),
        mcc: None,
        inflow: true,
        median: 180.0,
        weight: 5,
    },
    Pattern {
        texts: &["SAQUE 24H BANCO24HORAS", "SAQUE TERM ITAU 0042"],
        tipo: Some("saque"),
        mcc: None,
        inflow: false,
        median: 100.0,
        weight: 2,
    },
    Pattern {
        texts: &["TARIFA PACOTE SERVICOS", "JUROS CHEQUE ESPECIAL", "IOF"],
        tipo: Some("tarifa"),
        mcc: None,
        inflow: false,
        median: 25.0,
        weight: 2,
    },
    Pattern {
        texts: &[
            "PAGTO FATURA CARTAO",
            "PARCELA EMPRESTIMO 03/24",
            "FINANCIAMENTO VEICULO",
        ],
        tipo: Some("boleto"),
        mcc: None,
        inflow: false,
        median: 700.0,
        weight: 2,
    },
    Pattern {
        texts: &[
            "DEB AUT ENEL",
            "SABESP",
            "VIVO FIBRA",
            "CONDOMINIO EDIFICIO SOL",
            "ALUGUEL",
        ],
        tipo: Some("debito_automatico"),
        mcc: None,
        inflow: false,
        median: 220.0,
        weight: 3,
    },
    Pattern {
        texts: &["PAGTO DARF", "IPVA SP", "IPTU SAO PAULO"],
        tipo: Some("boleto"),
        mcc: None,
        inflow: false,
        median: 300.0,
        weight: 1,
    },
];

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

/// Whether the bureaus hold no record of this CPF, for a `missing_rate` in 0..=1.
pub fn is_missing(cpf: &Cpf, missing_rate: f64) -> bool {
    (seed(cpf, 99) % 10_000) as f64 / 10_000.0 < missing_rate
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
    let mut r = rng(cpf, 2);
    let n = [0, 0, 0, 1, 1, 2, 3, 5][r.random_range(0..8)];
    let dividas = (0..n)
        .map(|_| {
            let due = today - Duration::days(r.random_range(-120..720));
            let paid = (due < today && r.random_bool(0.6))
                .then(|| br_date(due + Duration::days(r.random_range(0..40))));
            Debt {
                valor: money(&mut r, 1500.0),
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
    let mut r = rng(cpf, 3);
    let idade = r.random_range(19..80);
    let birth = today - Duration::days(idade as i64 * 365 + r.random_range(0..365));
    let bens = (0..r.random_range(0..4))
        .map(|_| Asset {
            tipo: ["imovel", "veiculo", "moto", "investimento"]
                .choose(&mut r)
                .expect("pool")
                .to_string(),
            inicio_posse: br_date(today - Duration::days(r.random_range(30..5000))),
            quitado: r.random_bool(0.5),
        })
        .collect();
    RatingRecord {
        cpf: cpf.digits(),
        data_nascimento: br_date(birth),
        idade,
        endereco,
        fonte_de_renda: format!("Salário - {}", EMPLOYERS.choose(&mut r).expect("pool")),
        renda_mensal: money(&mut r, 4200.0),
        bens,
    }
}

/// Movements a day, between 2 and 20 by CPF unless the simulator sets a rate.
fn daily_rate(cpf: &Cpf, override_rate: Option<f64>) -> f64 {
    override_rate.unwrap_or_else(|| 2.0 + (seed(cpf, 4) % 1800) as f64 / 100.0)
}

/// The whole history in `[from, to]`, in date order; pages are slices of it.
pub fn movements(cpf: &Cpf, from: NaiveDate, to: NaiveDate, per_day: Option<f64>) -> Vec<Movement> {
    let rate = daily_rate(cpf, per_day);
    let total_weight: u32 = PATTERNS.iter().map(|p| p.weight).sum();
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        let mut r = rng(cpf, 1000 + day.num_days_from_ce() as u64);
        // Salary on the 5th of each month.
        if day.day() == 5 {
            out.push(Movement {
                id: format!("{}-s", day.format("%Y%m%d")),
                tipo: Some("salario".into()),
                valor: money(&mut rng(cpf, 5), 4200.0),
                data: br_date(day),
                descricao: format!(
                    "SALARIO {}",
                    EMPLOYERS.choose(&mut rng(cpf, 3)).expect("pool")
                ),
                mcc: None,
            });
        }
        // A whole number of movements whose mean is the daily rate.
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
            let amount = money(&mut r, pattern.median);
            out.push(Movement {
                id: format!("{}-{i}", day.format("%Y%m%d")),
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
