//! Logging: text for people, JSON for collectors; `RUST_LOG` filters, `info` by default.
//!
//! The `serving` span (with the pod's name) is entered once on each thread of the runtime for
//! the thread's whole life, rather than around every poll of every connection: each log line
//! carries it, and a request pays nothing for it.

use std::cell::RefCell;
use std::io::IsTerminal;

use tracing::Span;
use tracing::span::EnteredSpan;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal, never in collected container logs.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}

thread_local! {
    static ENTERED: RefCell<Option<EnteredSpan>> = const { RefCell::new(None) };
}

/// Enter `span` on this thread until [`leave_on_this_thread`] (a runtime's thread-start hook).
pub fn enter_for_this_thread(span: &Span) {
    ENTERED.with_borrow_mut(|entered| *entered = Some(span.clone().entered()));
}

/// Leave what [`enter_for_this_thread`] entered (a runtime's thread-stop hook), while the
/// thread's logging state still exists.
pub fn leave_on_this_thread() {
    ENTERED.with_borrow_mut(|entered| drop(entered.take()));
}
