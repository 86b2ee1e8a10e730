"""One call and one recipe: :class:`~streamline_lib.pipeline.recipe.Recipe`, :func:`~streamline_lib.pipeline.compress.compress`
and :func:`~streamline_lib.pipeline.reproduce.reproduce`."""
