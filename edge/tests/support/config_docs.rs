//! Generates configuration layers for the config-loading fuzz targets of plaza-edge and
//! plaza-broker (included by both through `#[path]`): key paths learned from the serialized
//! defaults, values of the right type at the edges of their range and of every wrong type, as a
//! TOML document, `PLAZA_*` environment variables and `--flag` style overrides.

use proptest::prelude::*;
use serde::Serialize;

/// Every key path of `defaults` serialized to TOML (tables and leaves), with its default.
pub(crate) fn key_paths<T: Serialize>(
    defaults: &T,
    extra: &[&str],
) -> Vec<(Vec<String>, toml::Value)> {
    fn walk(prefix: &[String], table: &toml::Table, out: &mut Vec<(Vec<String>, toml::Value)>) {
        for (k, v) in table {
            let mut path = prefix.to_vec();
            path.push(k.clone());
            if let toml::Value::Table(t) = v {
                walk(&path, t, out);
            }
            out.push((path, v.clone()));
        }
    }
    let mut out = Vec::new();
    let table = toml::Table::try_from(defaults).expect("the defaults serialize to TOML");
    walk(&[], &table, &mut out);
    // Keys whose default is unset (`None` is not serialized): typed as text.
    for key in extra {
        out.push((
            key.split('.').map(str::to_owned).collect(),
            toml::Value::String(String::new()),
        ));
    }
    out
}

/// A value for a key whose default is `default`: the same type near the edges of its range
/// (durations included), or any other type.
pub(crate) fn value_for(default: toml::Value) -> BoxedStrategy<toml::Value> {
    let other_type = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        any::<f64>().prop_map(toml::Value::Float),
        "\\PC{0,12}".prop_map(toml::Value::String),
        Just(toml::Value::Array(vec![])),
        Just(toml::Value::Table(toml::Table::new())),
    ];
    let same = match default {
        toml::Value::Integer(_) => prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(255),
            Just(256),
            Just(i64::MAX),
            Just(i64::from(u32::MAX) + 1),
            0i64..100_000,
            any::<i64>(),
        ]
        .prop_map(toml::Value::Integer)
        .boxed(),
        toml::Value::String(_) => prop_oneof![
            // Durations, from nothing to beyond any clock.
            prop::sample::select(vec![
                "0s",
                "1ns",
                "1ms",
                "5s",
                "25s",
                "1h",
                "30 days",
                "60 years",
                "1000years",
                "584942417355y",
                "18446744073709551615s",
                "1s 1ns",
                "-1s",
                "soon",
            ])
            .prop_map(str::to_owned),
            // Addresses, names, secrets, namespaces' modes.
            prop::sample::select(vec![
                "127.0.0.1:0",
                "0.0.0.0:8080",
                "[::1]:7000",
                "localhost:7000",
                "host:99999",
                "memory",
                "cluster",
                "nats",
                "text",
                "json",
                "full",
                "counts",
                "off",
                "subscribe",
                "http://x",
                "https://idp.example/",
                "",
            ])
            .prop_map(str::to_owned),
            "[a-z0-9]{16,40}",
            "\\PC{0,16}",
        ]
        .prop_map(toml::Value::String)
        .boxed(),
        toml::Value::Boolean(_) => any::<bool>().prop_map(toml::Value::Boolean).boxed(),
        toml::Value::Array(_) => prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    "subscribe",
                    "publish",
                    "presence",
                    "10.0.0.0/8",
                    "::1/128",
                    "*",
                    "https://app.example",
                    "x"
                ])
                .prop_map(|s| toml::Value::String(s.to_owned())),
                any::<i64>().prop_map(toml::Value::Integer),
            ],
            0..4,
        )
        .prop_map(toml::Value::Array)
        .boxed(),
        other => Just(other).boxed(),
    };
    prop_oneof![4 => same, 1 => other_type].boxed()
}

/// One generated setting: a key path (known, or known with a made-up last part) and a value.
pub(crate) fn setting(
    keys: Vec<(Vec<String>, toml::Value)>,
) -> BoxedStrategy<(Vec<String>, toml::Value)> {
    (
        prop::sample::select(keys),
        prop::bool::weighted(0.05),
        "[a-z_]{1,8}",
    )
        .prop_flat_map(|((mut path, default), made_up, name)| {
            if made_up {
                path.push(name);
            }
            value_for(default).prop_map(move |v| (path.clone(), v))
        })
        .boxed()
}

/// `value` as the text of an environment variable or a flag.
pub(crate) fn as_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sets `path` in `table`, replacing whatever non-table is in the way.
pub(crate) fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut at = table;
    for p in parents {
        let entry = at
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        at = entry.as_table_mut().expect("a table");
    }
    at.insert(last.clone(), value);
}

/// The document text: the settings as TOML, sometimes cut short or replaced by arbitrary text.
pub(crate) fn document(
    table: &toml::Table,
    damage: Option<(prop::sample::Index, String)>,
) -> String {
    let text = toml::to_string(table).unwrap_or_default();
    match damage {
        None => text,
        Some((at, insert)) => {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            format!("{}{insert}", &text[..i])
        }
    }
}
