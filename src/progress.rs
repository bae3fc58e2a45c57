//! Progress bars (indicatif) for pulls and backfills, drawn on a terminal only, and the log
//! writer that keeps tracing's lines from tearing them.

use std::io::Write;
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Turns bars on (call once, when stderr is a terminal and logs are text).
pub fn enable(on: bool) {
    let target = if on {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let _ = BARS.set(MultiProgress::with_draw_target(target));
}

fn bars() -> &'static MultiProgress {
    BARS.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::hidden()))
}

/// A bar counting `unit`s, with a total when it is known.
pub fn bar(total: Option<u64>, unit: &str, message: &str) -> ProgressBar {
    let pb = bars().add(match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    });
    let template = match total {
        Some(_) => format!(
            "{{msg}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, {{eta}} left)"
        ),
        None => format!("{{msg}}: {{human_pos}} {unit} ({{elapsed}})"),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(message.to_string());
    pb
}

/// A `MakeWriter` for tracing that suspends the bars while a line is written.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.0);
        bars().suspend(|| {
            let _ = std::io::stderr().write_all(&line);
        });
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(Vec::with_capacity(256))
    }
}
