//! Tests of whole tables on real files.
