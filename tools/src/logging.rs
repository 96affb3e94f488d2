//! Structured logs on stderr; the level comes from `LOOPIX_LOG` (default `info`), colours
//! only when stderr is a terminal (log files stay plain text).

use std::io::IsTerminal;

/// Installs the subscriber once; later calls do nothing. A `LOOPIX_LOG` that is not a
/// valid filter is an error rather than silence.
pub fn init() -> Result<(), String> {
    let filter = match std::env::var("LOOPIX_LOG") {
        Ok(v) => tracing_subscriber::EnvFilter::try_new(&v)
            .map_err(|e| format!("LOOPIX_LOG: `{v}` is not a log filter ({e}); e.g. `debug` or `info,loopix_runtime=debug`"))?,
        Err(_) => tracing_subscriber::EnvFilter::new("info"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}
