//! Error codes and the QUIC application close codes derived from them.
//!
//! A QUIC connection closed by KubeChat carries `ErrorCode as u32` as its
//! application error code, so both ends and packet captures agree on why.

use crate::messages::ErrorCode;

/// Conversions between [`ErrorCode`] and close codes / Kubernetes reasons.
pub trait ErrorCodeExt: Sized {
    /// The QUIC application close code for this error.
    fn close_code(self) -> u32;
    /// Parses a close code; unknown codes become `None`.
    fn from_close_code(code: u64) -> Option<Self>;
    /// A short lowercase label for logs and metrics, e.g. `"frame_too_large"`.
    fn label(self) -> &'static str;
}

impl ErrorCodeExt for ErrorCode {
    fn close_code(self) -> u32 {
        self as i32 as u32
    }

    fn from_close_code(code: u64) -> Option<Self> {
        i32::try_from(code).ok().and_then(|c| Self::try_from(c).ok())
    }

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Protocol => "protocol",
            Self::FrameTooLarge => "frame_too_large",
            Self::VersionMismatch => "version_mismatch",
            Self::IdentityInvalid => "identity_invalid",
            Self::HeartbeatTimeout => "heartbeat_timeout",
            Self::GoingAway => "going_away",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamFailed => "upstream_failed",
            Self::Refused => "refused",
            Self::TooLarge => "too_large",
            Self::Cancelled => "cancelled",
            Self::IdleTimeout => "idle_timeout",
            Self::TooManyStreams => "too_many_streams",
            Self::GrantInvalid => "grant_invalid",
            Self::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_round_trip() {
        for c in 0..=15 {
            let code = ErrorCode::try_from(c).expect("codes 0..=15 exist");
            assert_eq!(ErrorCode::from_close_code(u64::from(code.close_code())), Some(code));
            assert!(!code.label().is_empty());
        }
        assert_eq!(ErrorCode::from_close_code(u64::MAX), None);
        assert_eq!(ErrorCode::from_close_code(999), None);
    }
}
