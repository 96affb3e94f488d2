//! Structured logs on stderr; the level comes from `LOOPIX_LOG` (default `info`), colours
//! only when stderr is a terminal (log files stay plain text).

use std::io::IsTerminal;

/// The levels a directive may name.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// The filter `LOOPIX_LOG` asks for; checked by every command before it does anything, so
/// a mistake is an error, never silence. Stricter than tracing's own syntax: a bare word
/// must be a level (tracing reads `debg` as a target name at every level, which hides every
/// other log line), and a directive naming a target must give its level (`target=level`).
pub fn filter() -> Result<tracing_subscriber::EnvFilter, String> {
    let Ok(v) = std::env::var("LOOPIX_LOG") else {
        return Ok(tracing_subscriber::EnvFilter::new("info"));
    };
    let refuse = |why: String| {
        format!(
            "LOOPIX_LOG: `{v}` is not a log filter ({why}); e.g. `debug` or `info,loopix_runtime=debug`"
        )
    };
    for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = d.rsplit_once('=').map_or(d, |(_, level)| level);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(refuse(format!(
                "`{d}` names no level; the levels are {}",
                LEVELS.join(", ")
            )));
        }
    }
    tracing_subscriber::EnvFilter::try_new(&v).map_err(|e| refuse(e.to_string()))
}

/// Installs the subscriber once; later calls do nothing.
pub fn init() -> Result<(), String> {
    let filter = filter()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_word_must_be_a_level_and_a_target_must_have_one() {
        // One test changes the variable: the others in this binary do not read it.
        let with = |v: &str| {
            // SAFETY: no other thread of this test binary reads or writes LOOPIX_LOG.
            unsafe { std::env::set_var("LOOPIX_LOG", v) };
            filter().map(|_| ())
        };
        for good in [
            "debug",
            "INFO",
            "info,loopix_runtime=debug",
            "warn,loopix=trace",
        ] {
            assert_eq!(with(good), Ok(()), "{good}");
        }
        for bad in [
            "debg",
            "info,loopix=loud",
            "loopix_runtime",
            "info,,verbose",
        ] {
            let e = with(bad).unwrap_err();
            assert!(e.starts_with(&format!("LOOPIX_LOG: `{bad}`")), "{e}");
        }
        unsafe { std::env::remove_var("LOOPIX_LOG") };
    }
}
