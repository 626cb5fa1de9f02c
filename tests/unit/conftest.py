"""Unit tests import the collection as ``ansible_collections.keel.postgres``."""

from tests.harness.collection_path import ensure_collection_importable

ensure_collection_importable()
