//! serde helpers shared by the stages' configurations.

use serde::{Deserialize, Deserializer};

/// A field that takes one value or a list of them (`green = "10.0.0.2"` or `green = [..]`).
pub(crate) fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::Many(v) => v,
        OneOrMany::One(v) => vec![v],
    })
}

/// `#[serde(default = "crate::fields::yes")]`: a flag that is on unless turned off.
pub(crate) fn yes() -> bool {
    true
}
