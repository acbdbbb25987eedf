"""Tests of diffnum.models."""
