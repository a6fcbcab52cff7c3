//! Handover image (issue 3).
