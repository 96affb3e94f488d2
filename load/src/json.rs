//! `--json` output: one pretty-printed object on stdout, for every subcommand alike.

use serde::Serialize;

/// Prints `value` as one JSON object.
pub fn print(value: &impl Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}
