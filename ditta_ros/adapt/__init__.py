"""Test-time adaptation: DiTTA's stage C, and the peer methods behind the same interface."""
