"""1-D k-means kernels: nearest-centroid assignment and per-cluster sums (Deep Compression Sec. 3).

Both are exact (no fastmath): the assignment and its ties must match the NumPy
twin bit for bit, and the sums are accumulated in input order, as ``np.bincount`` does.
"""


from ._config import jit


@jit()
def assign_sorted(x, centroids, labels):
    """Index of the nearest centroid for every value, by binary search (O(n log k)).

    The distance is ``abs(x[i] - centroids[j])`` computed in float64, as the reference does.
    Ties go to the lowest index: equal distances on both sides, duplicate centroid values, and
    distinct centroids whose rounded distances coincide all pick the first index.

    Parameters
    ----------
    x : ndarray, shape (n,), float64. IN: the values. With finite centroids a NaN or infinite
        value gets label 0, as in the reference (every distance is NaN or inf: a tie).
    centroids : ndarray, shape (k,), float64, k >= 1. IN: sorted ascending, finite, duplicates
        allowed.
    labels : ndarray, shape (n,), int32. OUT: ``labels[i]`` in [0, k).

    Notes
    -----
    The rounded distance ``x - c`` is non-increasing in the index over the centroids below ``x``
    and ``c - x`` is non-decreasing over those at or above it (rounding is monotone). So the
    minimum is at one of the two neighbours of ``x``; the right one is already the first index
    of its value (a lower bound search), and the lowest index sharing the left one's distance is
    found by a second binary search.
    """
    k = centroids.shape[0]
    for i in range(x.shape[0]):
        xi = x[i]
        lo = 0
        hi = k
        while lo < hi:  # right = first j with centroids[j] >= xi
            mid = (lo + hi) >> 1
            if centroids[mid] < xi:
                lo = mid + 1
            else:
                hi = mid
        right = lo
        if right == 0:
            labels[i] = 0
            continue
        dl = xi - centroids[right - 1]
        if right < k and centroids[right] - xi < dl:
            labels[i] = right
            continue
        lo = 0
        hi = right - 1
        while lo < hi:  # first j < right whose distance equals the left neighbour's
            mid = (lo + hi) >> 1
            if xi - centroids[mid] <= dl:
                hi = mid
            else:
                lo = mid + 1
        labels[i] = lo


@jit()
def segment_sum(values, labels, sums, counts):
    """Sum and count the values of each label (Lloyd update; the centroid gradient of DC Eq. 3).

    Parameters
    ----------
    values : ndarray, shape (n,), float64. IN.
    labels : ndarray, shape (n,), int32. IN: each in [0, k) (not checked).
    sums : ndarray, shape (k,), float64. OUT: zeroed, then ``sums[j]`` = sum of the values
        labelled j, accumulated in input order.
    counts : ndarray, shape (k,), int64. OUT: zeroed, then the number of values labelled j.
    """
    for j in range(sums.shape[0]):
        sums[j] = 0.0
        counts[j] = 0
    for i in range(values.shape[0]):
        j = labels[i]
        sums[j] += values[i]
        counts[j] += 1
