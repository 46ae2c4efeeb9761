//! A real serial device (`/dev/ttyUSB0`, `/dev/serial/by-id/…`, or a pty) via tokio-serial,
//! built without libudev: port enumeration is not needed to open a known path.

use std::path::PathBuf;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_serial::{DataBits, SerialPortBuilderExt, StopBits};

use super::{Console, ConsoleDriver};
use crate::config::Parity;
use crate::error::{BoardError, Result};

pub struct SerialConsoleDriver {
    pub device: PathBuf,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
    pub max_line: usize,
}

impl ConsoleDriver for SerialConsoleDriver {
    fn open(&self) -> BoxFuture<'_, Result<Console>> {
        async move {
            let path = self.device.to_string_lossy().into_owned();
            let parity = match self.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            };
            let data_bits = match self.data_bits {
                5 => DataBits::Five,
                6 => DataBits::Six,
                7 => DataBits::Seven,
                _ => DataBits::Eight,
            };
            let stop_bits = if self.stop_bits == 2 {
                StopBits::Two
            } else {
                StopBits::One
            };
            let port = tokio_serial::new(&path, self.baud)
                .parity(parity)
                .data_bits(data_bits)
                .stop_bits(stop_bits)
                .open_native_async()
                .map_err(|e| BoardError::Console {
                    what: format!("open {path}"),
                    detail: e.to_string(),
                })?;
            let (r, w) = tokio::io::split(port);
            Ok(Console::from_io(r, w, self.max_line, None))
        }
        .boxed()
    }
}
