//! Console output: bytes written to the PL011 data register at `UART_IPA`.
//!
//! Transmit only, one byte store per character and no status polling: every access exits to
//! the VMM, so the runtime prints little (a boot banner, panics, the selftest report).

use core::fmt::{self, Write};
use mte_protocol::UART_IPA;

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            // SAFETY: the UART data register, identity mapped as Device memory.
            unsafe { (UART_IPA as *mut u8).write_volatile(byte) };
        }
        Ok(())
    }
}

pub fn print(args: fmt::Arguments) {
    // Writing to the UART cannot fail.
    let _ = Uart.write_fmt(args);
}

/// Print a formatted line on the console.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
