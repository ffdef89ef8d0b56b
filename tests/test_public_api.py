import dicomnode


def test_public_api_is_sorted_and_complete():
    assert dicomnode.__all__ == sorted(dicomnode.__all__)
    for name in dicomnode.__all__:
        assert hasattr(dicomnode, name), name
    assert dicomnode.__version__ == "0.1.0"
