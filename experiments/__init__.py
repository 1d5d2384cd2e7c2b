"""Experiments that live outside the shipped package: their scaffolding, configs and scripts."""
