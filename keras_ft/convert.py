"""`python -m keras_ft.convert gguf ...`: `keras-ft convert gguf ...`."""

from keras_ft.cli.convert import main

if __name__ == "__main__":
    main()
