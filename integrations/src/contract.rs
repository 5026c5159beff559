//! The bureau HTTP contract of `docs/partner-api.md`: partner kinds and the bodies they answer.
//!
//! Field names are the bureaus' own (Portuguese), mapped to Rust names with serde. The types
//! are used both to check that a partner's answer is well formed (a malformed body is partner
//! trouble, retried like a 5xx) and by the simulator to produce answers.

use serde::{Deserialize, Serialize};

/// What a partner is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Base A: identity and debts.
    Consumer,
    /// Base B: income and assets.
    Rating,
    /// Base C: financial movements, paginated.
    Movements,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Consumer, Kind::Rating, Kind::Movements];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Consumer => "consumer",
            Kind::Rating => "rating",
            Kind::Movements => "movements",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Debt {
    pub valor: f64,
    pub empresa: String,
    pub data_vencimento: String,
    pub data_pagamento: Option<String>,
}

/// `GET {base}/v1/consumers/{cpf}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerRecord {
    pub cpf: String,
    pub nome: String,
    pub endereco: String,
    pub dividas: Vec<Debt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    pub tipo: String,
    pub inicio_posse: String,
    pub quitado: bool,
}

/// `GET {base}/v1/ratings/{cpf}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RatingRecord {
    pub cpf: String,
    pub data_nascimento: String,
    pub idade: u32,
    pub endereco: String,
    pub fonte_de_renda: String,
    pub renda_mensal: f64,
    pub bens: Vec<Asset>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardPurchase {
    pub data: String,
    pub valor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Movement {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tipo: Option<String>,
    /// Negative is money leaving the account.
    pub valor: f64,
    pub data: String,
    pub descricao: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcc: Option<String>,
}

/// One page of `GET {base}/v1/movements/{cpf}?from&to&cursor&limit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MovementsPage {
    pub cpf: String,
    pub ultima_consulta: String,
    pub ultima_compra_cc: Option<CardPurchase>,
    pub movimentacao_financeira: Vec<Movement>,
    pub proximo_cursor: Option<String>,
}

/// Movements pages default to this many rows; the contract allows up to [`MAX_PAGE`].
pub const DEFAULT_PAGE: u32 = 500;
pub const MAX_PAGE: u32 = 1000;

/// A partner's answer, checked against the contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PartnerData {
    Consumer(ConsumerRecord),
    Rating(RatingRecord),
    Movements(MovementsPage),
}

impl PartnerData {
    /// Parses a body as the given kind's answer.
    pub fn parse(kind: Kind, body: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            Kind::Consumer => PartnerData::Consumer(serde_json::from_slice(body)?),
            Kind::Rating => PartnerData::Rating(serde_json::from_slice(body)?),
            Kind::Movements => PartnerData::Movements(serde_json::from_slice(body)?),
        })
    }
}
