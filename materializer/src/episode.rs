//! The episode document: validation of caller input with errors that name the field, and the
//! canonical encoding carried in an op's `data`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{EPISODE_ID_BYTES_MAX, EPISODE_LIST_ITEMS_MAX};

/// The table whose ops the materializer projects.
pub const TABLE: &str = "episodes";

/// One episode as stored in the log and the projection. The field order is the canonical
/// encoding's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Episode {
    /// Row id (non-empty).
    pub id: String,
    /// Conversation session (non-empty).
    pub session_id: String,
    /// What kind of event this is (non-empty).
    pub event_type: String,
    /// One-line summary (non-empty).
    pub summary: String,
    /// Free text.
    #[serde(default)]
    pub detail: String,
    /// 0.0..=1.0.
    #[serde(default = "default_importance")]
    pub importance: f64,
    /// Unix seconds.
    #[serde(default)]
    pub created_at: f64,
    /// Emotions named in the episode.
    #[serde(default)]
    pub emotions: Vec<String>,
    /// Who took part.
    #[serde(default)]
    pub participants: Vec<String>,
    /// Where it happened.
    #[serde(default)]
    pub location: String,
}

fn default_importance() -> f64 {
    0.5
}

/// A field of an episode document that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldError {
    /// The field's name (or `(document)` when the input is not an object).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError { field: field.to_string(), reason: reason.into() }
}

/// Every field an episode document may carry.
const FIELDS: [&str; 10] = [
    "id",
    "session_id",
    "event_type",
    "summary",
    "detail",
    "importance",
    "created_at",
    "emotions",
    "participants",
    "location",
];

/// How far ahead of the local clock a caller's `created_at` may be by default (the node uses
/// its drift bound, `max_drift_secs`).
pub const CREATED_AT_AHEAD_SECS_DEFAULT: f64 = 60.0;
/// Above this, a `created_at` is taken for milliseconds (1e11 s is the year 5138).
pub const CREATED_AT_SECONDS_MAX_PLAUSIBLE: f64 = 1e11;

impl Episode {
    /// About how many bytes its strings own (for bounds on queues of episodes; capacity
    /// slack is not counted).
    pub fn heap_bytes(&self) -> usize {
        let list = |l: &[String]| l.iter().map(|s| s.len() + size_of::<String>()).sum::<usize>();
        self.id.len()
            + self.session_id.len()
            + self.event_type.len()
            + self.summary.len()
            + self.detail.len()
            + self.location.len()
            + list(&self.emotions)
            + list(&self.participants)
    }

    /// Validates caller input. `now_s` fills a missing `created_at`. Unknown fields are refused
    /// (a typo would otherwise lose data silently). `created_at` may be at most
    /// [`CREATED_AT_AHEAD_SECS_DEFAULT`] ahead of `now_s`.
    pub fn from_input(value: &Value, now_s: f64) -> Result<Episode, FieldError> {
        Self::from_input_within(value, now_s, CREATED_AT_AHEAD_SECS_DEFAULT)
    }

    /// [`Episode::from_input`] with `created_at` at most `ahead_s` ahead of `now_s`. This bound
    /// is for caller input only: an episode received from a peer is judged by [`validate`]
    /// alone, so every node keeps the same rows whatever its clock says.
    ///
    /// [`validate`]: Episode::validate
    pub fn from_input_within(
        value: &Value,
        now_s: f64,
        ahead_s: f64,
    ) -> Result<Episode, FieldError> {
        let episode = Self::parse_input(value, now_s)?;
        let latest = now_s + ahead_s;
        if episode.created_at > latest {
            let reason = if episode.created_at > CREATED_AT_SECONDS_MAX_PLAUSIBLE {
                format!(
                    "{} looks like milliseconds; created_at is unix seconds (now is about {})",
                    episode.created_at,
                    now_s.floor()
                )
            } else {
                format!(
                    "{} is more than {ahead_s} s ahead of this node's clock ({})",
                    episode.created_at,
                    now_s.floor()
                )
            };
            return Err(field_error("created_at", reason));
        }
        Ok(episode)
    }

    fn parse_input(value: &Value, now_s: f64) -> Result<Episode, FieldError> {
        let Value::Object(map) = value else {
            return Err(field_error("(document)", "an episode must be a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(field_error(unknown, "unknown field"));
        }
        let episode = Episode {
            id: required_text(map, "id")?,
            session_id: required_text(map, "session_id")?,
            event_type: required_text(map, "event_type")?,
            summary: required_text(map, "summary")?,
            detail: optional_text(map, "detail")?,
            importance: match map.get("importance") {
                None | Some(Value::Null) => default_importance(),
                Some(v) => number(v, "importance")?,
            },
            created_at: match map.get("created_at") {
                None | Some(Value::Null) => now_s,
                Some(v) => number(v, "created_at")?,
            },
            emotions: text_list(map, "emotions")?,
            participants: text_list(map, "participants")?,
            location: optional_text(map, "location")?,
        };
        episode.validate()?;
        Ok(episode)
    }

    /// The invariants every stored episode holds (also checked on episodes read from the log).
    pub fn validate(&self) -> Result<(), FieldError> {
        for (field, text) in [
            ("id", &self.id),
            ("session_id", &self.session_id),
            ("event_type", &self.event_type),
            ("summary", &self.summary),
        ] {
            if text.trim().is_empty() {
                return Err(field_error(field, "must be a non-empty string"));
            }
        }
        if self.id.len() > EPISODE_ID_BYTES_MAX {
            return Err(field_error("id", format!("longer than {EPISODE_ID_BYTES_MAX} bytes")));
        }
        if !(0.0..=1.0).contains(&self.importance) {
            return Err(field_error(
                "importance",
                format!("must be between 0.0 and 1.0, got {}", self.importance),
            ));
        }
        if !self.created_at.is_finite() || self.created_at < 0.0 {
            return Err(field_error("created_at", "must be unix seconds (a finite number >= 0)"));
        }
        for (field, list) in [("emotions", &self.emotions), ("participants", &self.participants)] {
            if list.len() > EPISODE_LIST_ITEMS_MAX {
                return Err(field_error(
                    field,
                    format!("at most {EPISODE_LIST_ITEMS_MAX} entries"),
                ));
            }
        }
        Ok(())
    }

    /// The canonical bytes carried in the op: JSON with the fields in declaration order.
    pub fn to_data(&self) -> Vec<u8> {
        // Serializing plain strings and finite floats cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an episode back from an op's data, checking the same invariants as input.
    pub fn from_data(data: &[u8]) -> Result<Episode, FieldError> {
        let episode: Episode = serde_json::from_slice(data)
            .map_err(|e| field_error("(document)", format!("not an episode: {e}")))?;
        episode.validate()?;
        Ok(episode)
    }

    /// `created_at` as a key that sorts like the number (the value is finite and >= 0).
    pub fn created_key(&self) -> u64 {
        self.created_at.to_bits()
    }
}

fn required_text(map: &Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(field_error(field, "is required")),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(field_error(field, "must be a non-empty string")),
        Some(other) => Err(field_error(field, format!("must be a string, got {}", kind(other)))),
    }
}

fn optional_text(map: &Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(field_error(field, format!("must be a string, got {}", kind(other)))),
    }
}

fn number(value: &Value, field: &str) -> Result<f64, FieldError> {
    value
        .as_f64()
        .ok_or_else(|| field_error(field, format!("must be a number, got {}", kind(value))))
}

fn text_list(map: &Map<String, Value>, field: &str) -> Result<Vec<String>, FieldError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(field_error(
                    field,
                    format!("entry {i} must be a string, got {}", kind(other)),
                )),
            })
            .collect(),
        Some(other) => {
            Err(field_error(field, format!("must be a list of strings, got {}", kind(other))))
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"id": "e1", "session_id": "s1", "event_type": "chat", "summary": "hello"})
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let e = Episode::from_input(&base(), 12.5).expect("valid");
        assert_eq!(e.importance, 0.5);
        assert_eq!(e.created_at, 12.5);
        assert!(e.emotions.is_empty() && e.detail.is_empty());
        assert_eq!(Episode::from_data(&e.to_data()), Ok(e));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("summary", json!(""), "non-empty"),
            ("summary", json!(3), "must be a string"),
            ("importance", json!(1.5), "between 0.0 and 1.0"),
            ("importance", json!("high"), "must be a number"),
            ("emotions", json!(["ok", 1]), "entry 1"),
            ("colour", json!("red"), "unknown field"),
        ];
        for (field, value, reason) in cases {
            let mut doc = base();
            doc[field] = value;
            let err = Episode::from_input(&doc, 0.0).expect_err(field);
            assert_eq!(err.field, field);
            assert!(err.reason.contains(reason), "{err}");
        }
        let mut doc = base();
        doc.as_object_mut().expect("object").remove("session_id");
        assert_eq!(Episode::from_input(&doc, 0.0).expect_err("missing").field, "session_id");
        assert_eq!(Episode::from_input(&json!([1]), 0.0).expect_err("list").field, "(document)");
    }

    #[test]
    fn created_at_is_seconds_within_the_bound() {
        let now = 1_800_000_000.0;
        let at = |t: f64| {
            let mut doc = base();
            doc["created_at"] = json!(t);
            Episode::from_input_within(&doc, now, 60.0)
        };
        assert!(at(0.0).is_ok(), "1970 is allowed");
        assert!(at(now + 60.0).is_ok(), "up to the bound ahead");
        let ahead = at(now + 61.0).expect_err("past the bound");
        assert_eq!(ahead.field, "created_at");
        assert!(ahead.reason.contains("ahead"), "{ahead}");
        let ms = at(now * 1000.0).expect_err("milliseconds");
        assert!(ms.reason.contains("looks like milliseconds"), "{ms}");
        assert!(at(-1.0).is_err(), "before 1970");
        let mut stored = Episode::from_input(&base(), now).expect("valid");
        stored.created_at = now * 1000.0;
        assert_eq!(stored.validate(), Ok(()), "a received episode is not judged by this clock");
    }

    #[test]
    fn created_key_sorts_like_the_number() {
        let mut keys = Vec::new();
        for t in [0.0, 0.5, 1.0, 1e9, 1.7e9 + 0.25] {
            let mut e = Episode::from_input(&base(), 0.0).expect("valid");
            e.created_at = t;
            keys.push(e.created_key());
        }
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }
}
