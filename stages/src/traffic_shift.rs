//! `traffic-shift` (in progress).
