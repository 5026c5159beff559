//! The corpus builder: labelled statement lines for training, and an evaluation set the
//! training data never sees.
//!
//! Two sources, as `shared/taxonomy.md` describes:
//! - brands of the name-suggestion-index (`dist/json/nsi.json` of the npm package
//!   `name-suggestion-index`, BSD-3-Clause), labelled by their OpenStreetMap tag, wrapped the
//!   way card statements print merchants (upper case, accents stripped, descriptors cut at 22
//!   characters, store numbers, cities, processor prefixes, international formats);
//! - bank-statement patterns ([`patterns`]) for what brands do not cover: salaries, PIX and
//!   TED transfers, card-bill payments, loan instalments, fees, taxes, utilities, betting, and
//!   the small local merchants that fill real Brazilian statements.
//!
//! Brands whose index id ends in `0` or `1` are reserved: they go only to the evaluation set,
//! wrapped in formats the training corpus never uses, beside pattern rows drawn from separate
//! phrasings and name pools. Everything is drawn from one seeded generator: the same index
//! file and seed give the same bytes.

pub mod patterns;
pub mod pools;

use std::io::Write;
use std::path::Path;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::ClassifierError;
use crate::labels::Label;
use crate::normalize::fold_latin;
use patterns::{spec, LabelSpec, SPECS};
use pools::{Pools, EVAL, MONTHS, PROCESSORS, TRAIN, UF};

/// OpenStreetMap tags → label, the table of taxonomy.md. Tags not listed are ambiguous and
/// their brands are left out.
const TAG_TABLE: &[(&str, &[&str], Label)] = &[
    (
        "shop",
        &[
            "supermarket",
            "greengrocer",
            "butcher",
            "deli",
            "frozen_food",
            "seafood",
            "cheese",
            "dairy",
            "health_food",
            "wholesale",
        ],
        Label::Groceries,
    ),
    (
        "amenity",
        &["restaurant", "fast_food", "cafe", "ice_cream", "pub", "bar"],
        Label::FoodAndDrink,
    ),
    (
        "shop",
        &[
            "bakery",
            "pastry",
            "confectionery",
            "chocolate",
            "coffee",
            "tea",
            "alcohol",
            "beverages",
            "wine",
        ],
        Label::FoodAndDrink,
    ),
    (
        "shop",
        &[
            "clothes",
            "shoes",
            "electronics",
            "department_store",
            "variety_store",
            "convenience",
            "kiosk",
            "newsagent",
            "books",
            "jewelry",
            "sports",
            "toys",
            "gift",
            "mobile_phone",
            "computer",
            "pet",
            "stationery",
            "bag",
            "watches",
            "fashion_accessories",
            "second_hand",
            "baby_goods",
            "outdoor",
            "cosmetics",
            "perfumery",
            "video_games",
            "tobacco",
            "e-cigarette",
            "charity",
            "bicycle",
            "music",
            "hifi",
            "camera",
            "photo",
        ],
        Label::GeneralMerchandise,
    ),
    (
        "shop",
        &[
            "doityourself",
            "hardware",
            "furniture",
            "garden_centre",
            "paint",
            "bed",
            "kitchen",
            "interior_decoration",
            "houseware",
            "bathroom_furnishing",
            "lighting",
            "flooring",
            "tiles",
            "trade",
            "household_linen",
            "carpet",
            "curtain",
            "window_blind",
        ],
        Label::HomeImprovement,
    ),
    (
        "amenity",
        &[
            "pharmacy",
            "dentist",
            "clinic",
            "doctors",
            "hospital",
            "veterinary",
        ],
        Label::Medical,
    ),
    (
        "shop",
        &["optician", "hearing_aids", "medical_supply"],
        Label::Medical,
    ),
    (
        "healthcare",
        &["laboratory", "sample_collection"],
        Label::Medical,
    ),
    ("leisure", &["fitness_centre"], Label::PersonalCare),
    (
        "shop",
        &[
            "hairdresser",
            "beauty",
            "massage",
            "dry_cleaning",
            "laundry",
        ],
        Label::PersonalCare,
    ),
    (
        "office",
        &[
            "insurance",
            "financial_advisor",
            "tax_advisor",
            "lawyer",
            "employment_agency",
            "coworking",
        ],
        Label::GeneralServices,
    ),
    (
        "amenity",
        &[
            "post_office",
            "parcel_locker",
            "kindergarten",
            "childcare",
            "prep_school",
            "language_school",
            "driving_school",
            "car_wash",
            "vehicle_inspection",
        ],
        Label::GeneralServices,
    ),
    (
        "shop",
        &["car_repair", "tyres", "storage_rental", "copyshop"],
        Label::GeneralServices,
    ),
    (
        "amenity",
        &[
            "fuel",
            "charging_station",
            "parking",
            "bicycle_rental",
            "car_sharing",
        ],
        Label::Transportation,
    ),
    ("man_made", &["charge_point"], Label::Transportation),
    ("tourism", &["hotel", "motel", "hostel"], Label::Travel),
    ("shop", &["travel_agency"], Label::Travel),
    ("amenity", &["car_rental"], Label::Travel),
    ("office", &["telecommunication"], Label::RentAndUtilities),
    ("shop", &["telecommunication"], Label::RentAndUtilities),
    ("amenity", &["cinema"], Label::Entertainment),
    (
        "leisure",
        &[
            "bowling_alley",
            "amusement_arcade",
            "escape_game",
            "trampoline_park",
        ],
        Label::Entertainment,
    ),
    ("tourism", &["theme_park"], Label::Entertainment),
    ("shop", &["bookmaker", "lottery"], Label::Gambling),
    ("amenity", &["casino", "gambling"], Label::Gambling),
    ("leisure", &["adult_gaming_centre"], Label::Gambling),
    ("shop", &["money_lender", "pawnbroker"], Label::LoanPayments),
    ("amenity", &["atm"], Label::TransferOutWithdrawal),
    ("office", &["government"], Label::Government),
];

/// The label of an index category path such as `brands/shop/supermarket`.
pub fn label_of_path(path: &str) -> Option<Label> {
    let mut parts = path.split('/');
    if parts.next()? != "brands" {
        return None;
    }
    let key = parts.next()?;
    let value = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    TAG_TABLE
        .iter()
        .find(|(k, values, _)| *k == key && values.contains(&value))
        .map(|(_, _, l)| *l)
}

/// Whether an index item is reserved for evaluation (its id ends in `0` or `1`).
pub fn is_reserved(id: &str) -> bool {
    id.ends_with('0') || id.ends_with('1')
}

/// A brand of the index that maps to a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brand {
    pub id: String,
    /// Upper case, accents folded, qualifiers in parentheses removed.
    pub name: String,
    pub label: Label,
    /// The brand operates in Brazil (its location set includes `br`).
    pub brazil: bool,
}

/// The brands of an index file, with the index version. Brands whose names are not in Latin
/// script are left out: Brazilian statements print Latin letters only.
pub fn load_brands(path: &Path) -> Result<(String, Vec<Brand>), ClassifierError> {
    let bytes = std::fs::read(path).map_err(|e| ClassifierError::io(path, e))?;
    let root: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ClassifierError::Nsi(format!("{}: not valid JSON ({e})", path.display())))?;
    let version = root
        .pointer("/_meta/version")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    let categories = root.get("nsi").and_then(|v| v.as_object()).ok_or_else(|| {
        ClassifierError::Nsi("no `nsi` object: is this dist/json/nsi.json?".into())
    })?;
    let mut brands = Vec::new();
    for (path, category) in categories {
        let Some(label) = label_of_path(path) else {
            continue;
        };
        let items = category.get("items").and_then(|v| v.as_array());
        for item in items.into_iter().flatten() {
            let id = item.get("id").and_then(|v| v.as_str()).unwrap_or_default();
            let display = item
                .get("displayName")
                .and_then(|v| v.as_str())
                .or_else(|| item.pointer("/tags/name").and_then(|v| v.as_str()))
                .unwrap_or_default();
            let Some(name) = statement_name(display) else {
                continue;
            };
            if id.is_empty() {
                continue;
            }
            let brazil = item
                .pointer("/locationSet/include")
                .and_then(|v| v.as_array())
                .is_some_and(|a| a.iter().any(|c| c.as_str() == Some("br")));
            brands.push(Brand {
                id: id.to_string(),
                name,
                label,
                brazil,
            });
        }
    }
    // serde_json's map is ordered, but sort anyway: the corpus must not depend on it.
    brands.sort_by(|a, b| a.id.cmp(&b.id).then(a.label.cmp(&b.label)));
    brands.dedup_by(|a, b| a.id == b.id);
    if brands.is_empty() {
        return Err(ClassifierError::Nsi("no brand maps to a label".into()));
    }
    Ok((version, brands))
}

/// How a statement prints a brand name: upper case, accents folded, no qualifiers. `None` for
/// names in other scripts or with fewer than two letters.
pub fn statement_name(display: &str) -> Option<String> {
    let base = match display.find(" (") {
        Some(i) => &display[..i],
        None => display,
    };
    let mut out = String::with_capacity(base.len());
    for ch in base.chars() {
        if ch.is_ascii() {
            if ch.is_ascii_alphanumeric() || " &-.'+/".contains(ch) {
                out.push(ch.to_ascii_uppercase());
            } else {
                out.push(' ');
            }
        } else if let Some(c) = fold_latin(ch) {
            out.push(c.to_ascii_uppercase());
        } else if ch.is_alphabetic() {
            return None;
        } else {
            out.push(' ');
        }
    }
    let name = out.split_whitespace().collect::<Vec<_>>().join(" ");
    (name.chars().filter(|c| c.is_ascii_alphabetic()).count() >= 2).then_some(name)
}

/// One labelled statement line.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub date: String,
    pub description: String,
    pub amount: f64,
    pub mcc: Option<u16>,
    pub kind: Option<&'static str>,
    pub category: Label,
    /// `nsi:<item id>` for brand rows, `pattern` for statement patterns.
    pub source: String,
}

/// Sizes and the seed of a corpus.
#[derive(Debug, Clone)]
pub struct CorpusSettings {
    pub seed: u64,
    /// Rows aimed at per label in the training corpus (brand-rich labels may exceed it, since
    /// every non-reserved brand appears at least once).
    pub rows_per_label: usize,
    /// Pattern rows per label in the evaluation set, besides the reserved brands.
    pub eval_pattern_rows_per_label: usize,
}

impl Default for CorpusSettings {
    fn default() -> Self {
        CorpusSettings {
            seed: 20261121,
            rows_per_label: 2400,
            eval_pattern_rows_per_label: 120,
        }
    }
}

/// A training corpus and its evaluation set.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub train: Vec<Row>,
    pub eval: Vec<Row>,
}

/// Which phrasings a row may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Eval,
}

struct Gen {
    rng: ChaCha8Rng,
}

impl Gen {
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("pools are not empty")
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
            .collect()
    }

    /// A day from 1 January 2025 to 31 October 2026, as `dd/mm/yyyy`.
    fn date(&mut self) -> String {
        const DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let mut day = self.rng.random_range(0..365 + 304);
        let mut year = 2025;
        if day >= 365 {
            day -= 365;
            year = 2026;
        }
        let mut month = 0;
        while day >= DAYS[month] {
            day -= DAYS[month];
            month += 1;
        }
        format!("{:02}/{:02}/{year}", day + 1, month + 1)
    }

    fn amount(&mut self, spec: &LabelSpec) -> f64 {
        // Log-normal around the label's median (Box-Muller for the normal draw).
        let u1: f64 = self.rng.random::<f64>().max(1e-12);
        let u2: f64 = self.rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let mut value = (spec.median * (spec.sigma * z).exp()).clamp(0.5, 500_000.0);
        value = if self.chance(spec.round_share) {
            ((value / 10.0).round() * 10.0).max(10.0)
        } else {
            (value * 100.0).round() / 100.0
        };
        if spec.inflow {
            value
        } else {
            -value
        }
    }

    fn mcc(&mut self, spec: &LabelSpec) -> Option<u16> {
        if spec.mccs.is_empty() || !self.chance(spec.mcc_share) {
            return None;
        }
        // A few MCCs are wrong, as they are in real data.
        if self.chance(0.03) {
            let other = &SPECS[self.rng.random_range(0..SPECS.len())];
            if !other.mccs.is_empty() {
                return Some(self.pick(other.mccs));
            }
        }
        Some(self.pick(spec.mccs))
    }

    fn kind(&mut self, spec: &LabelSpec, default: &'static [&'static str]) -> Option<&'static str> {
        if !self.chance(0.7) {
            return None;
        }
        // The bureau's hint "may be missing or wrong".
        if self.chance(0.05) {
            let other = &SPECS[self.rng.random_range(0..SPECS.len())];
            return Some(self.pick(other.kinds));
        }
        let kinds = if default.is_empty() {
            spec.kinds
        } else {
            default
        };
        Some(self.pick(kinds))
    }

    fn fill(&mut self, template: &str, pools: &Pools) -> String {
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = start
                + rest[start..]
                    .find('}')
                    .expect("templates close their braces");
            let key = &rest[start + 1..end];
            match key {
                "PERSON" => {
                    let first = self.pick(pools.first);
                    let surname = self.pick(pools.surname);
                    out.push_str(first);
                    out.push(' ');
                    out.push_str(surname);
                    if self.chance(0.4) {
                        out.push(' ');
                        out.push_str(self.pick(pools.surname));
                    }
                }
                "FIRST" => out.push_str(self.pick(pools.first)),
                "SURNAME" => out.push_str(self.pick(pools.surname)),
                "EMP" => {
                    let kinds = [
                        "COMERCIO",
                        "SERVICOS",
                        "INDUSTRIA",
                        "TECNOLOGIA",
                        "LOGISTICA",
                        "CONSTRUTORA",
                        "ALIMENTOS",
                    ];
                    let forms = ["LTDA", "SA", "ME", "EIRELI", "S/A"];
                    out.push_str(self.pick(pools.surname));
                    out.push(' ');
                    out.push_str(self.pick(&kinds));
                    if self.chance(0.6) {
                        out.push(' ');
                        out.push_str(self.pick(&forms));
                    }
                }
                "BANK" => out.push_str(self.pick(pools.bank)),
                "CITY" => out.push_str(self.pick(pools.city_br)),
                "UF" => out.push_str(self.pick(UF)),
                "NN" => out.push_str(&format!("{:02}", self.rng.random_range(1..=36))),
                "NNNN" => out.push_str(&self.digits(4)),
                "N6" => out.push_str(&self.digits(6)),
                "DATE" => {
                    let d = self.date();
                    out.push_str(&d[..5]);
                }
                "MONTH" => out.push_str(self.pick(MONTHS)),
                "YEAR" => out.push_str(&self.rng.random_range(2024..=2026).to_string()),
                "NGO" => out.push_str(self.pick(pools.ngo)),
                "TICKER" => out.push_str(self.pick(pools.ticker)),
                other => panic!("unknown placeholder {{{other}}} in a pattern template"),
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn pattern_row(
        &mut self,
        spec: &LabelSpec,
        split: Split,
    ) -> (String, Option<u16>, Option<&'static str>) {
        let (templates, pools) = match split {
            Split::Train => (spec.train, &TRAIN),
            Split::Eval => (spec.eval, &EVAL),
        };
        let template = self.pick(templates);
        let mut description = self.fill(template, pools);
        // Some statements print the date or a document number after the text.
        if split == Split::Train && self.chance(0.15) {
            description.push(' ');
            description.push_str(&self.date()[..5]);
        }
        if split == Split::Eval && self.chance(0.15) {
            description = format!("{description} DOC {}", self.digits(5));
        }
        (description, self.mcc(spec), self.kind(spec, &[]))
    }

    /// Wraps a brand the way a statement prints it; the format families differ by split.
    fn brand_row(
        &mut self,
        brand: &Brand,
        split: Split,
    ) -> (String, Option<u16>, Option<&'static str>) {
        let spec = spec(brand.label);
        let pools = if split == Split::Train { &TRAIN } else { &EVAL };
        let name = brand.name.as_str();
        let cut = |s: &str, n: usize| -> String {
            s.chars().take(n).collect::<String>().trim_end().to_string()
        };
        let squashed: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let city = if brand.brazil || self.chance(0.6) {
            self.pick(pools.city_br).to_string()
        } else {
            let (c, cc) = self.pick(pools.city_intl);
            format!("{c} {cc}")
        };
        let (description, kinds): (String, &'static [&'static str]) = match (brand.label, split) {
            (Label::TransferOutWithdrawal, Split::Train) => (
                match self.rng.random_range(0..5) {
                    0 => format!("SAQUE {} {}", cut(name, 22), cut(&city, 13)),
                    1 => format!("SAQUE 24H {name}"),
                    2 => format!("ATM {} {}", cut(name, 22), city),
                    3 => format!("CASH WITHDRAWAL {name}"),
                    _ => format!("SAQUE TERM {} {}", cut(name, 18), self.digits(4)),
                },
                &["saque"],
            ),
            (Label::TransferOutWithdrawal, Split::Eval) => (
                match self.rng.random_range(0..3) {
                    0 => format!("RETIRADA {} TERM {}", cut(name, 18), self.digits(4)),
                    1 => format!("SAQ ATM {name}"),
                    _ => format!("ATM WDL {} {}", cut(name, 22), city),
                },
                &["saque"],
            ),
            (Label::RentAndUtilities, Split::Train) => (
                match self.rng.random_range(0..4) {
                    0 => format!("DEB AUT {name}"),
                    1 => format!("{name} FATURA"),
                    2 => format!("CONTA {name}"),
                    _ => format!("{name} RECARGA"),
                },
                &["debito_automatico", "boleto"],
            ),
            (Label::RentAndUtilities, Split::Eval) => (
                match self.rng.random_range(0..2) {
                    0 => format!("PGTO {name} TELEFONIA"),
                    _ => format!("{name} MENSALIDADE"),
                },
                &["debito_automatico", "boleto"],
            ),
            (Label::LoanPayments, Split::Train) => (
                match self.rng.random_range(0..3) {
                    0 => format!("PAGTO {name}"),
                    1 => format!(
                        "PARCELA {} {:02}/{:02}",
                        cut(name, 20),
                        self.rng.random_range(1..=12),
                        self.rng.random_range(12..=48)
                    ),
                    _ => format!("{name} EMPRESTIMO"),
                },
                &["boleto", "debito_automatico"],
            ),
            (Label::LoanPayments, Split::Eval) => (
                match self.rng.random_range(0..2) {
                    0 => format!("PREST {name}"),
                    _ => format!("BOLETO {name}"),
                },
                &["boleto"],
            ),
            (Label::Government, Split::Train) => (
                match self.rng.random_range(0..3) {
                    0 => format!("PAGTO {name}"),
                    1 => format!("{name} TAXA"),
                    _ => format!("GUIA {name}"),
                },
                &["boleto"],
            ),
            (Label::Government, Split::Eval) => (
                match self.rng.random_range(0..2) {
                    0 => format!("TRIBUTO {name}"),
                    _ => format!("BOLETO {name}"),
                },
                &["boleto"],
            ),
            (_, Split::Train) => (
                match self.rng.random_range(0..8) {
                    0 => format!("{} {}", cut(name, 22), cut(&city, 13)),
                    1 => {
                        let p = self.pick(PROCESSORS);
                        cut(&format!("{p}{squashed}"), 22)
                    }
                    2 => {
                        let n = self.rng.random_range(2..=5);
                        format!("{} {}", cut(name, 22), self.digits(n))
                    }
                    3 => {
                        if self.chance(0.5) {
                            format!("COMPRA CARTAO DEB {}", cut(name, 22))
                        } else {
                            format!("COMPRA CARTAO {} {}", cut(name, 22), &self.date()[..5])
                        }
                    }
                    4 => {
                        let (c, cc) = self.pick(pools.city_intl);
                        format!("{} #{} {c} {cc}", cut(name, 20), self.digits(4))
                    }
                    5 => {
                        let form = self.pick(&["LTDA", "COMERCIO LTDA", "SA", "ME"]);
                        format!("{} {form}", cut(name, 22))
                    }
                    6 => title_case(&format!("{name} - {city}")),
                    _ => format!("PIX QRCODE {}", cut(name, 22)),
                },
                &[],
            ),
            (_, Split::Eval) => (
                match self.rng.random_range(0..7) {
                    0 => format!(
                        "{} PARC {:02}/{:02}",
                        cut(name, 18),
                        self.rng.random_range(1..=6),
                        self.rng.random_range(6..=12)
                    ),
                    1 => format!(
                        "{} {}",
                        self.pick(&["APPLE PAY", "GOOGLE PAY", "SAMSUNG PAY"]),
                        cut(name, 22)
                    ),
                    2 => {
                        if self.chance(0.5) {
                            format!("WWW.{squashed}.COM.BR")
                        } else {
                            format!("{squashed}.COM")
                        }
                    }
                    3 => format!(
                        "CP {} {} {}",
                        &self.date()[..5],
                        cut(name, 20),
                        cut(&city, 13)
                    ),
                    4 => format!("{}*{}", cut(name, 22), cut(&city, 13)),
                    5 => format!("DEBITO {} {}", cut(name, 22), self.pick(UF)),
                    _ => format!("{} - LOJA {}", title_case(name), self.digits(2)),
                },
                &[],
            ),
        };
        let kind = if kinds.is_empty() && description.starts_with("PIX") {
            self.chance(0.7).then_some("pix")
        } else {
            self.kind(spec, kinds)
        };
        (description, self.mcc(spec), kind)
    }
}

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_string() + &c.as_str().to_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the training corpus and the evaluation set from the index brands.
pub fn build(brands: &[Brand], settings: &CorpusSettings) -> Corpus {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(settings.seed),
    };
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for &label in Label::ALL {
        let spec = spec(label);
        let (reserved, usable): (Vec<&Brand>, Vec<&Brand>) = brands
            .iter()
            .filter(|b| b.label == label)
            .partition(|b| is_reserved(&b.id));
        let target = settings.rows_per_label;
        // Brands carry about 70% of a brand label's rows, each brand at least once and at
        // most four times; statement patterns (local merchants) fill the rest.
        let per_brand = if usable.is_empty() {
            0
        } else {
            ((target as f64 * 0.7) / usable.len() as f64)
                .ceil()
                .clamp(1.0, 4.0) as usize
        };
        for brand in &usable {
            for _ in 0..per_brand {
                let drawn = g.brand_row(brand, Split::Train);
                priced_row(&mut g, &mut train, drawn, spec, format!("nsi:{}", brand.id));
            }
        }
        let brand_rows = usable.len() * per_brand;
        let pattern_rows = target.saturating_sub(brand_rows).max(target / 5);
        for _ in 0..pattern_rows {
            let drawn = g.pattern_row(spec, Split::Train);
            priced_row(&mut g, &mut train, drawn, spec, "pattern".into());
        }
        for brand in &reserved {
            let drawn = g.brand_row(brand, Split::Eval);
            priced_row(&mut g, &mut eval, drawn, spec, format!("nsi:{}", brand.id));
        }
        for _ in 0..settings.eval_pattern_rows_per_label {
            let drawn = g.pattern_row(spec, Split::Eval);
            priced_row(&mut g, &mut eval, drawn, spec, "pattern".into());
        }
    }
    shuffle_and_number(&mut g, &mut train, "t");
    shuffle_and_number(&mut g, &mut eval, "e");
    Corpus { train, eval }
}

/// Prices a drawn row (description, MCC, type) for its label and adds it to `out`. The draws
/// happen in a fixed order (row, amount, date), so a seed always gives the same corpus.
fn priced_row(
    g: &mut Gen,
    out: &mut Vec<Row>,
    (description, mcc, kind): (String, Option<u16>, Option<&'static str>),
    spec: &LabelSpec,
    source: String,
) {
    let amount = g.amount(spec);
    out.push(row(g, description, amount, mcc, kind, spec.label, source));
}

fn row(
    g: &mut Gen,
    description: String,
    amount: f64,
    mcc: Option<u16>,
    kind: Option<&'static str>,
    category: Label,
    source: String,
) -> Row {
    Row {
        id: String::new(),
        date: g.date(),
        description,
        amount,
        mcc,
        kind,
        category,
        source,
    }
}

fn shuffle_and_number(g: &mut Gen, rows: &mut [Row], prefix: &str) {
    use rand::seq::SliceRandom;
    rows.shuffle(&mut g.rng);
    for (i, r) in rows.iter_mut().enumerate() {
        r.id = format!("{prefix}{:06}", i + 1);
    }
}

/// Writes rows as CSV (`id,date,description,amount,mcc,type,category,source`), gzip-compressed
/// when the path ends in `.gz`. The gzip header carries no time stamp, so the bytes depend only
/// on the rows.
pub fn write_csv(rows: &[Row], path: &Path) -> Result<(), ClassifierError> {
    let file = std::fs::File::create(path).map_err(|e| ClassifierError::io(path, e))?;
    let sink: Box<dyn Write> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(
            flate2::GzBuilder::new()
                .mtime(0)
                .write(file, flate2::Compression::best()),
        )
    } else {
        Box::new(std::io::BufWriter::new(file))
    };
    let mut w = csv::Writer::from_writer(sink);
    let io = |e: csv::Error| ClassifierError::io(path, std::io::Error::other(e.to_string()));
    w.write_record([
        "id",
        "date",
        "description",
        "amount",
        "mcc",
        "type",
        "category",
        "source",
    ])
    .map_err(io)?;
    for r in rows {
        w.write_record([
            r.id.as_str(),
            r.date.as_str(),
            r.description.as_str(),
            &format!("{:.2}", r.amount),
            &r.mcc.map(|m| format!("{m:04}")).unwrap_or_default(),
            r.kind.unwrap_or(""),
            r.category.as_str(),
            r.source.as_str(),
        ])
        .map_err(io)?;
    }
    let inner = w
        .into_inner()
        .map_err(|e| ClassifierError::io(path, std::io::Error::other(e.to_string())))?;
    drop(inner);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_paths_map_by_the_taxonomy_tag_table() {
        assert_eq!(
            label_of_path("brands/shop/supermarket"),
            Some(Label::Groceries)
        );
        assert_eq!(
            label_of_path("brands/amenity/atm"),
            Some(Label::TransferOutWithdrawal)
        );
        assert_eq!(
            label_of_path("brands/shop/bookmaker"),
            Some(Label::Gambling)
        );
        assert_eq!(
            label_of_path("brands/amenity/bank"),
            None,
            "ambiguous tags are left out"
        );
        assert_eq!(label_of_path("operators/amenity/atm"), None);
    }

    #[test]
    fn reserved_ids_end_in_0_or_1() {
        assert!(is_reserved("carrefour-2a1b30"));
        assert!(is_reserved("dia-675151"));
        assert!(!is_reserved("dia-675159"));
    }

    #[test]
    fn brand_names_are_printed_as_statements_print_them() {
        assert_eq!(
            statement_name("Assaí Atacadista").as_deref(),
            Some("ASSAI ATACADISTA")
        );
        assert_eq!(statement_name("Dia (Argentina)").as_deref(), Some("DIA"));
        assert_eq!(statement_name("McDonald's").as_deref(), Some("MCDONALD'S"));
        assert_eq!(statement_name("すき家"), None);
        assert_eq!(statement_name("7"), None);
    }

    fn brands() -> Vec<Brand> {
        let mut out = Vec::new();
        for (i, label) in [
            Label::Groceries,
            Label::TransferOutWithdrawal,
            Label::Medical,
        ]
        .iter()
        .enumerate()
        {
            for j in 0..16 {
                out.push(Brand {
                    id: format!("brand{i}-{j:x}"),
                    name: format!("BRAND {i} {j}"),
                    label: *label,
                    brazil: j % 2 == 0,
                });
            }
        }
        out
    }

    #[test]
    fn reserved_brands_go_only_to_evaluation_and_the_build_is_deterministic() {
        let settings = CorpusSettings {
            seed: 7,
            rows_per_label: 60,
            eval_pattern_rows_per_label: 5,
        };
        let a = build(&brands(), &settings);
        let b = build(&brands(), &settings);
        assert_eq!(a.train, b.train);
        assert_eq!(a.eval, b.eval);
        for r in &a.train {
            if let Some(id) = r.source.strip_prefix("nsi:") {
                assert!(!is_reserved(id), "{id} is reserved but in training data");
            }
        }
        let eval_brands = a
            .eval
            .iter()
            .filter(|r| r.source.starts_with("nsi:"))
            .count();
        assert_eq!(eval_brands, 3 * 2, "ids ending in 0 and 1 of each label");
        for label in Label::ALL {
            assert!(a.train.iter().filter(|r| r.category == *label).count() >= 12);
        }
        let other = build(
            &brands(),
            &CorpusSettings {
                seed: 8,
                ..settings
            },
        );
        assert_ne!(a.train, other.train);
    }

    #[test]
    fn amounts_carry_the_direction_of_their_label() {
        let a = build(
            &brands(),
            &CorpusSettings {
                seed: 1,
                rows_per_label: 40,
                eval_pattern_rows_per_label: 5,
            },
        );
        for r in a.train.iter().chain(&a.eval) {
            let inflow = matches!(r.category, Label::Income | Label::TransferIn);
            assert_eq!(r.amount > 0.0, inflow, "{r:?}");
            assert!(r.amount.abs() >= 0.5);
        }
    }
}
