//! The corpus builder: labelled statement lines for training, and an evaluation set the
//! training data never sees.
//!
//! Sources, as `docs/taxonomy.md` and `classifier/data/README.md` describe:
//! - brands of the name-suggestion-index (`dist/json/nsi.json` of the npm package
//!   `name-suggestion-index`, BSD-3-Clause), labelled by their OpenStreetMap tag; brands that
//!   operate in Brazil are drawn six times as often as the others;
//! - how Brazilian businesses are named ([`brazil`]): activity words, legal forms and the
//!   large companies of each label (utilities, telecoms, fuel, airlines, chains);
//! - bank-statement phrasings ([`patterns`]) for salaries, PIX and TED transfers, card-bill
//!   payments, loan instalments, fees, taxes and the like;
//! - statement styles ([`family`]): each row is printed as one bank or app prints that kind of
//!   movement, and carries the style's name so whole styles can be held out of training.
//!
//! Brands whose index id ends in `0` or `1`, and every fifth company of the lexicon, are
//! reserved: they go only to the evaluation set, beside people, places and phrasings drawn from
//! separate pools. Everything is drawn from one seeded generator: the same index file and seed
//! give the same bytes.

pub mod brazil;
pub mod family;
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
use brazil::Lexicon;
use family::{Family, Movement, FAMILIES};
use patterns::{spec, LabelSpec, SPECS};
use pools::{Pools, EVAL, MONTHS, TRAIN, UF};

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
    /// `nsi:<item id>` for index brands, `lexicon` for known Brazilian companies, `business`
    /// for generated local businesses, `pattern` for statement phrasings.
    pub source: String,
    /// The statement style the row is printed in ([`family::Family::name`]).
    pub family: &'static str,
}

/// Sizes and the seed of a corpus.
#[derive(Debug, Clone)]
pub struct CorpusSettings {
    pub seed: u64,
    /// Rows aimed at per label in the training corpus (brand-rich labels may exceed it, since
    /// every non-reserved brand appears at least once).
    pub rows_per_label: usize,
    /// Rows per label in the evaluation set (reserved brands and companies, evaluation name
    /// pools and phrasings).
    pub eval_rows_per_label: usize,
}

impl Default for CorpusSettings {
    fn default() -> Self {
        CorpusSettings {
            seed: 20261121,
            rows_per_label: 2400,
            eval_rows_per_label: 250,
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
        // Merchants are paid by people and by businesses alike (a fleet fills up for R$ 2,000,
        // a motorcycle for R$ 15), so their amounts spread wider than the bank's own lines.
        let sigma = spec.sigma
            + if is_merchant_label(spec.label) {
                0.4
            } else {
                0.0
            };
        let mut value = (spec.median * (sigma * z).exp()).clamp(0.5, 500_000.0);
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

/// Who a merchant row is about: the name a card prints and the legal name PIX and boletos
/// print, with where it came from (`nsi:<id>`, `lexicon`, `business`, `pattern`).
struct Party {
    trading: String,
    legal: String,
    source: String,
}

/// Labels whose rows are purchases from a merchant; the others are mostly lines a bank writes.
fn is_merchant_label(label: Label) -> bool {
    !matches!(
        label,
        Label::Income
            | Label::TransferIn
            | Label::TransferOut
            | Label::TransferOutWithdrawal
            | Label::LoanPayments
            | Label::BankFees
            | Label::Government
            | Label::RentAndUtilities
    )
}

impl Split {
    fn pools(self) -> &'static Pools {
        match self {
            Split::Train => &TRAIN,
            Split::Eval => &EVAL,
        }
    }
}

impl Gen {
    /// A whole number from `lo` to `hi`, both included.
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        self.rng.random_range(lo..=hi)
    }

    fn day_month(&mut self) -> String {
        self.date()[..5].to_string()
    }

    /// A local business of the label's lexicon: (trading name, legal name).
    fn business(&mut self, lex: &Lexicon, split: Split) -> (String, String) {
        let pools = split.pools();
        let fantasy = match split {
            Split::Train => brazil::FANTASY_TRAIN,
            Split::Eval => brazil::FANTASY_EVAL,
        };
        let lead = self.pick(lex.lead);
        let name = if lead.ends_with(" DE") {
            self.pick(pools.city_br).to_string()
        } else {
            match self.range(0, 5) {
                0 | 1 => self.pick(pools.surname).to_string(),
                2 => self.pick(fantasy).to_string(),
                3 => format!("{} {}", self.pick(pools.first), self.pick(pools.surname)),
                4 => {
                    let and = if self.chance(0.5) { "E" } else { "&" };
                    let (a, b) = (self.pick(pools.surname), self.pick(pools.surname));
                    format!("{a} {and} {b}")
                }
                _ => {
                    let letter = |g: &mut Gen| char::from(b'A' + g.range(0, 25) as u8);
                    format!("{}{}", letter(self), letter(self))
                }
            }
        };
        // Individual providers of services register under their own name: a MEI's legal name
        // is its CNPJ base and the owner's name, an ME's the name and the form.
        if lex.label == Label::GeneralServices && self.chance(0.2) {
            let person = self.fill("{PERSON}", pools);
            let legal = match self.range(0, 2) {
                0 => format!(
                    "{}.{}.{} {person}",
                    self.digits(2),
                    self.digits(3),
                    self.digits(3)
                ),
                1 => format!("{person} {}", self.pick(&["ME", "MEI", "EIRELI", "EPP"])),
                _ => format!("{person} {}", self.pick(lex.trail)),
            };
            return (legal.clone(), legal);
        }
        let trail = self.pick(lex.trail);
        let trading = if self.chance(0.6) {
            format!("{lead} {name}")
        } else {
            format!("{name} {trail}")
        };
        let form = self.pick(brazil::LEGAL_FORMS);
        let legal = match self.range(0, 2) {
            0 => format!("{name} {trail} {form}"),
            1 => format!("{trading} {form}"),
            _ => trading.clone(),
        };
        (trading, legal)
    }

    /// A known company of the label's lexicon, kept apart by split.
    fn company(&mut self, lex: &Lexicon, split: Split) -> (String, String) {
        let wanted = split == Split::Eval;
        let choices: Vec<&str> = lex
            .companies
            .iter()
            .enumerate()
            .filter(|(i, _)| brazil::company_reserved(*i) == wanted)
            .map(|(_, c)| *c)
            .collect();
        let name = self.pick(&choices).to_string();
        let legal = if self.chance(0.4) {
            format!("{name} {}", self.pick(&["S.A.", "S/A", "SA", "LTDA"]))
        } else {
            name.clone()
        };
        (name, legal)
    }

    /// Who a merchant row is about: an index brand, a known company, a local business, or a
    /// name from the label's statement phrasings.
    fn party(&mut self, label: Label, split: Split, brands: &[&Brand]) -> Party {
        let lex = brazil::lexicon(label);
        let r = self.rng.random::<f64>();
        if !brands.is_empty() && r < 0.3 {
            let b = self.pick(brands);
            let legal = if self.chance(0.3) {
                format!("{} {}", b.name, self.pick(brazil::LEGAL_FORMS))
            } else {
                b.name.clone()
            };
            return Party {
                trading: b.name.clone(),
                legal,
                source: format!("nsi:{}", b.id),
            };
        }
        if let Some(lex) = lex {
            if r < 0.48 {
                let (trading, legal) = self.company(lex, split);
                let source = "lexicon".into();
                return Party {
                    trading,
                    legal,
                    source,
                };
            }
            if r < 0.88 {
                let (trading, legal) = self.business(lex, split);
                let source = "business".into();
                return Party {
                    trading,
                    legal,
                    source,
                };
            }
        }
        let text = self.phrase(spec(label), split);
        Party {
            trading: text.clone(),
            legal: text,
            source: "pattern".into(),
        }
    }

    /// One of the label's statement phrasings, filled in.
    fn phrase(&mut self, spec: &LabelSpec, split: Split) -> String {
        let templates = match split {
            Split::Train => spec.train,
            Split::Eval => spec.eval,
        };
        let template = self.pick(templates);
        self.fill(template, split.pools())
    }

    /// A line the bank writes itself, in English for the foreign family when it has one.
    fn bank_line(&mut self, label: Label, split: Split, family: Family) -> String {
        let english = family::english_lines(label);
        if family == Family::Intl && !english.is_empty() && self.chance(0.7) {
            let template = self.pick(english);
            return self.fill(template, split.pools());
        }
        self.phrase(spec(label), split)
    }

    /// The bureau's movement type as it would come with this row: mostly the one its format
    /// implies, sometimes missing, rarely wrong ("it may be missing or wrong").
    fn hint(&mut self, implied: &'static str, spec: &LabelSpec) -> Option<&'static str> {
        if !self.chance(0.8) {
            return None;
        }
        if self.chance(0.02) {
            let other = &SPECS[self.rng.random_range(0..SPECS.len())];
            return Some(self.pick(other.kinds));
        }
        if implied.is_empty() {
            Some(self.pick(spec.kinds))
        } else {
            Some(implied)
        }
    }

    /// Draws one row of a label in a family's style: description, MCC, type and source.
    fn draw(&mut self, label: Label, split: Split, brands: &[&Brand], family: Family) -> Drawn {
        let spec = spec(label);
        let pools = split.pools();
        let person = |g: &mut Gen| g.fill("{PERSON}", pools);
        let (movement_text, source): (Movement<'_>, String);
        let owned: String;
        let party;
        let city = self.pick(pools.city_br);
        let uf = self.pick(UF);
        let choice = self.rng.random::<f64>();
        match label {
            Label::TransferIn if choice < 0.5 => {
                owned = person(self);
                movement_text = Movement::PixIn(&owned);
                source = "pattern".into();
            }
            Label::TransferOut if choice < 0.5 => {
                owned = person(self);
                movement_text = Movement::PixOut(&owned);
                source = "pattern".into();
            }
            Label::TransferOutWithdrawal if choice < 0.4 && !brands.is_empty() => {
                let b = self.pick(brands);
                owned = b.name.clone();
                movement_text = Movement::Withdrawal(&owned);
                source = format!("nsi:{}", b.id);
            }
            Label::LoanPayments | Label::Government | Label::RentAndUtilities if choice < 0.5 => {
                party = self.party(label, split, brands);
                owned = party.legal;
                let r = self.rng.random::<f64>();
                movement_text = match label {
                    Label::LoanPayments if r < 0.6 => Movement::Boleto(&owned),
                    Label::LoanPayments => Movement::DirectDebit(&owned),
                    Label::Government if r < 0.7 => Movement::Boleto(&owned),
                    Label::Government => Movement::PixOut(&owned),
                    _ if r < 0.5 => Movement::DirectDebit(&owned),
                    _ if r < 0.85 => Movement::Boleto(&owned),
                    _ => Movement::PixOut(&owned),
                };
                source = party.source;
            }
            _ if is_merchant_label(label) => {
                party = self.party(label, split, brands);
                source = party.source;
                if choice < 0.55 {
                    owned = party.trading;
                    movement_text = Movement::Card {
                        name: &owned,
                        city,
                        uf,
                    };
                } else {
                    owned = party.legal;
                    movement_text = if choice < 0.8 {
                        Movement::PixOut(&owned)
                    } else if choice < 0.94 {
                        Movement::Boleto(&owned)
                    } else {
                        Movement::DirectDebit(&owned)
                    };
                }
            }
            _ => {
                owned = self.bank_line(label, split, family);
                movement_text = Movement::Line(&owned);
                source = "pattern".into();
            }
        }
        // A bureau often sends a PIX's or boleto's counterparty alone, with the type saying the
        // rest: the registered name bare, in whichever family.
        let bare = match movement_text {
            Movement::PixOut(name) | Movement::Boleto(name) | Movement::DirectDebit(name)
                if source != "pattern" && self.chance(0.3) =>
            {
                Some((name.to_string(), movement_text.kind()))
            }
            _ => None,
        };
        let (description, implied) = match bare {
            Some(printed) => printed,
            None => family.print(self, &movement_text),
        };
        let implied = if implied.is_empty() {
            implied_kind(&description)
        } else {
            implied
        };
        let mcc = if matches!(movement_text, Movement::Card { .. }) {
            self.mcc(spec)
        } else {
            None
        };
        let kind = self.hint(implied, spec);
        Drawn {
            description,
            mcc,
            kind,
            source,
        }
    }
}

/// A drawn row before it is priced and dated.
struct Drawn {
    description: String,
    mcc: Option<u16>,
    kind: Option<&'static str>,
    source: String,
}

/// The movement type a bank line's own words imply, or `""` when they say nothing.
fn implied_kind(description: &str) -> &'static str {
    let d = description.to_ascii_uppercase();
    let starts = |words: &[&str]| words.iter().any(|w| d.starts_with(w));
    if d.contains("PIX") {
        "pix"
    } else if starts(&["TED", "TEV"]) {
        "ted"
    } else if starts(&["DOC "]) {
        "doc"
    } else if starts(&["SAQUE", "SAQ", "ATM", "RETIRADA", "CASH"]) {
        "saque"
    } else if starts(&[
        "TAR",
        "IOF",
        "JUROS",
        "ANUIDADE",
        "CESTA",
        "ENCARGOS",
        "MONTHLY",
        "ACCOUNT FEE",
    ]) {
        "tarifa"
    } else if d.contains("SALARIO") || starts(&["FOLHA", "PROVENTOS", "SALARY", "PAYROLL"]) {
        "salario"
    } else if starts(&["DEB AUT", "DA "]) {
        "debito_automatico"
    } else if starts(&["BOLETO", "DARF", "GUIA", "GRU", "PAGTO", "PAG "]) {
        "boleto"
    } else {
        ""
    }
}

/// Builds the training corpus and the evaluation set from the index brands and the lexicon.
///
/// Each row picks a family (statement style) at random and a way its label's money moves
/// (card purchase, PIX, boleto, direct debit, or a line of the bank's own). Brands of the
/// index that operate in Brazil are drawn six times as often as the others, since a Brazilian
/// statement names them far more often.
pub fn build(brands: &[Brand], settings: &CorpusSettings) -> Corpus {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(settings.seed),
    };
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for &label in Label::ALL {
        let spec = spec(label);
        let weighted = |reserved: bool| -> Vec<&Brand> {
            brands
                .iter()
                .filter(|b| b.label == label && is_reserved(&b.id) == reserved)
                .flat_map(|b| std::iter::repeat_n(b, if b.brazil { 6 } else { 1 }))
                .collect()
        };
        let (usable, reserved) = (weighted(false), weighted(true));
        for (split, pool, out, n) in [
            (Split::Train, &usable, &mut train, settings.rows_per_label),
            (
                Split::Eval,
                &reserved,
                &mut eval,
                settings.eval_rows_per_label,
            ),
        ] {
            for _ in 0..n {
                let family = g.pick(&FAMILIES);
                let drawn = g.draw(label, split, pool, family);
                let amount = g.amount(spec);
                let date = g.date();
                out.push(Row {
                    id: String::new(),
                    date,
                    description: drawn.description,
                    amount,
                    mcc: drawn.mcc,
                    kind: drawn.kind,
                    category: label,
                    source: drawn.source,
                    family: family.name(),
                });
            }
        }
    }
    shuffle_and_number(&mut g, &mut train, "t");
    shuffle_and_number(&mut g, &mut eval, "e");
    Corpus { train, eval }
}

fn shuffle_and_number(g: &mut Gen, rows: &mut [Row], prefix: &str) {
    use rand::seq::SliceRandom;
    rows.shuffle(&mut g.rng);
    for (i, r) in rows.iter_mut().enumerate() {
        r.id = format!("{prefix}{:06}", i + 1);
    }
}

/// Writes rows as CSV (`id,date,description,amount,mcc,type,category,source,family`), gzip-compressed
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
        "family",
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
            r.family,
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
    fn reserved_brands_and_companies_go_only_to_evaluation_and_the_build_is_deterministic() {
        let settings = CorpusSettings {
            seed: 7,
            rows_per_label: 300,
            eval_rows_per_label: 60,
        };
        let a = build(&brands(), &settings);
        let b = build(&brands(), &settings);
        assert_eq!(a.train, b.train);
        assert_eq!(a.eval, b.eval);
        let reserved_companies: Vec<&str> = brazil::LEXICONS
            .iter()
            .flat_map(|l| l.companies.iter().enumerate())
            .filter(|(i, _)| brazil::company_reserved(*i))
            .map(|(_, c)| *c)
            .collect();
        for r in &a.train {
            if let Some(id) = r.source.strip_prefix("nsi:") {
                assert!(!is_reserved(id), "{id} is reserved but in training data");
            }
            if r.source == "lexicon" {
                let d = r.description.to_uppercase();
                assert!(
                    !reserved_companies
                        .iter()
                        .any(|c| d.ends_with(c) && d.len() == c.len()),
                    "a reserved company is printed bare in training: {d}"
                );
            }
        }
        let eval_brands: Vec<&str> = a
            .eval
            .iter()
            .filter_map(|r| r.source.strip_prefix("nsi:"))
            .collect();
        assert!(!eval_brands.is_empty());
        assert!(eval_brands.iter().all(|id| is_reserved(id)));
        for label in Label::ALL {
            assert_eq!(a.train.iter().filter(|r| r.category == *label).count(), 300);
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
    fn every_family_prints_rows_of_every_label() {
        let a = build(
            &brands(),
            &CorpusSettings {
                seed: 3,
                rows_per_label: 300,
                eval_rows_per_label: 10,
            },
        );
        for family in FAMILIES {
            for label in Label::ALL {
                assert!(
                    a.train
                        .iter()
                        .any(|r| r.family == family.name() && r.category == *label),
                    "no {label} row in family {}",
                    family.name()
                );
            }
        }
    }

    #[test]
    fn movement_types_agree_with_what_the_description_says() {
        let a = build(
            &brands(),
            &CorpusSettings {
                seed: 5,
                rows_per_label: 300,
                eval_rows_per_label: 10,
            },
        );
        let mut checked = 0;
        let mut wrong = 0;
        for r in &a.train {
            let implied = implied_kind(&r.description);
            if let (Some(kind), "pix") = (r.kind, implied) {
                checked += 1;
                wrong += usize::from(kind != "pix");
            }
        }
        assert!(checked > 500, "{checked} PIX rows with a type");
        // Only the deliberate 2% of wrong hints may disagree.
        assert!(
            wrong * 100 <= checked * 5,
            "{wrong} of {checked} PIX rows typed otherwise"
        );
    }

    #[test]
    fn local_businesses_are_named_as_brazilian_businesses_register() {
        let mut g = Gen {
            rng: ChaCha8Rng::seed_from_u64(1),
        };
        let lex = brazil::lexicon(Label::Transportation).unwrap();
        for _ in 0..50 {
            let (trading, legal) = g.business(lex, Split::Train);
            let has_activity = |s: &str| lex.lead.iter().chain(lex.trail).any(|w| s.contains(w));
            assert!(has_activity(&trading), "{trading}");
            assert!(has_activity(&legal), "{legal}");
        }
    }

    #[test]
    fn amounts_carry_the_direction_of_their_label() {
        let a = build(
            &brands(),
            &CorpusSettings {
                seed: 1,
                rows_per_label: 40,
                eval_rows_per_label: 5,
            },
        );
        for r in a.train.iter().chain(&a.eval) {
            let inflow = matches!(r.category, Label::Income | Label::TransferIn);
            assert_eq!(r.amount > 0.0, inflow, "{r:?}");
            assert!(r.amount.abs() >= 0.5);
        }
    }
}
