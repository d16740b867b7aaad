// sparsenet: sparse neural-network inference. Umbrella header.
#pragma once

#include "sparsenet/csr.h"
#include "sparsenet/errors.h"
#include "sparsenet/io.h"
#include "sparsenet/layers.h"
#include "sparsenet/model.h"
#include "sparsenet/runtime.h"
