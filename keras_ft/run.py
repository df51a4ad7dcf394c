"""`python -m keras_ft.run ...`, as the design card names it: `keras-ft run ...`."""

from keras_ft.cli.run import main

if __name__ == "__main__":
    main()
