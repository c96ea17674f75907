"""Snapshot images: the monorepo at one commit, on a toolchain base image."""
