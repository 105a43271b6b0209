"""Code identity: comments, docstrings and formatting do not change it; code does; each rule sees its modules."""

import textwrap

from fmnist import codeid, models

SOURCE = textwrap.dedent('''
    """Module docstring."""

    import math  # a comment


    class Block:
        """Class docstring."""

        width: int = 3
        """Attribute docstring."""

        def forward(self, x):
            """Method docstring."""
            return math.sqrt(x) * self.width


    def only_doc():
        """Nothing but a docstring."""
''')


def test_comments_docstrings_and_formatting_are_ignored():
    edited = textwrap.dedent('''
        """A rewritten module docstring."""
        import math


        class Block:  # the comment moved here
            width: int = (
                3
            )

            def forward(self, x):
                # a new explanation, and no docstring any more
                return math.sqrt(x)   *   self.width


        def only_doc():
            """Another docstring."""
    ''')
    assert codeid.normalise(edited) == codeid.normalise(SOURCE)


def test_a_code_change_is_seen():
    base = codeid.normalise(SOURCE)
    assert codeid.normalise(SOURCE.replace("self.width", "self.width + 1")) != base
    assert codeid.normalise(SOURCE.replace("width: int = 3", "width: int = 4")) != base
    # a string that is a value, not a docstring, is code
    assert codeid.normalise(SOURCE + "\nNAME = 'a'\n") != codeid.normalise(
        SOURCE + "\nNAME = 'b'\n"
    )


def test_each_family_has_its_own_identity_and_shares_the_trainer():
    vit, cnn = codeid.train_modules("vit"), codeid.train_modules("cnn")
    assert "fmnist.models.vit" in vit and "fmnist.models.vit" not in cnn
    assert {"fmnist.train", "fmnist.recipes", "fmnist.augment", "fmnist.data"} <= set(vit) & set(
        cnn
    )
    assert codeid.code_id(vit) != codeid.code_id(cnn)
    run = {"model": {"arch": "vit_simple"}}
    assert codeid.train_code_id(run) == codeid.code_id(vit)
    ids = codeid.train_code_ids({"a": run, "b": {"model": {"arch": "standard_cnn"}}})
    assert ids == {"a": codeid.code_id(vit), "b": codeid.code_id(cnn)}
    assert codeid.code_id(["fmnist.report", "fmnist.compare"]) == codeid.code_id(
        ["fmnist.compare", "fmnist.report", "fmnist.report"]
    )


def test_every_listed_module_is_found():
    families = {p.module for p in models.PRESETS.values()}
    groups = [
        codeid.AGGREGATE_MODULES,
        codeid.REPORT_MODULES,
        codeid.PLOT_MODULES,
        codeid.GALLERY_MODULES,
        *(codeid.train_modules(f) for f in families),
    ]
    for group in groups:
        for name in group:
            assert codeid.module_file(name).is_file(), name
