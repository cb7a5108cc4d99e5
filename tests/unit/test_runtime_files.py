"""A folder that holds no runtime is one line naming the folder and the files it lacks, for every primitive."""

from __future__ import annotations

import pytest

from aiprim import primitives


@pytest.mark.parametrize("name", sorted(primitives.names()))
def test_loading_a_folder_without_a_runtime_names_what_is_missing(name, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^runtime {tmp_path}: \S+\.npz, \S+\.json missing .*export_runtime"):
        primitives.get(name).load_runtime(tmp_path)
